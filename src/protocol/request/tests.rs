use proptest::prelude::*;

use super::*;

const LIMITS: Limits = Limits {
    max_value_size: 1024,
    max_line_size: 4096,
};

/// Feeds `chunks` one after another and collects every outcome, as the session does.
pub(in crate::protocol) fn drive(chunks: &[&[u8]]) -> Vec<Result<Request, Invalid>> {
    let mut d = Decoder::new(LIMITS);
    let mut out = Vec::new();
    for chunk in chunks {
        d.buffer().extend_from_slice(chunk);
        while let Some(r) = d.next_request() {
            let close = matches!(r, Err(Invalid { close: true, .. }));
            out.push(r);
            if close {
                return out;
            }
        }
    }
    out
}

/// The one request `input` holds.
pub(in crate::protocol) fn one(input: &[u8]) -> Result<Request, Invalid> {
    let mut v = drive(&[input]);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

/// The error line of the one (invalid) request `input` holds.
pub(in crate::protocol) fn err(input: &[u8]) -> &'static [u8] {
    one(input).unwrap_err().reply
}

/// Each `(request, reply)` row: the request alone is refused with exactly that reply.
pub(in crate::protocol) fn refused_with(rows: &[(&[u8], &[u8])]) {
    for &(request, want) in rows {
        assert_eq!(err(request), want, "{request:?}");
    }
}

#[test]
fn set_with_data_block() {
    let r = one(b"set k 5 10 3 noreply\r\nabc\r\n").unwrap();
    let Request::Op {
        op:
            Command::Keyed(Keyed::Store {
                kind,
                key,
                flags,
                exptime,
                data,
                ..
            }),
        noreply,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        (kind, &key[..], flags, exptime, &data[..], noreply),
        (Storage::Set, &b"k"[..], 5, 10, &b"abc"[..], true)
    );
}

#[test]
fn storage_waits_for_the_whole_data_block() {
    assert!(drive(&[b"set k 0 0 5\r\nab"]).is_empty());
    assert_eq!(drive(&[b"set k 0 0 5\r\nab", b"cde\r\n"]).len(), 1);
}

#[test]
fn bad_inputs_get_memcached_replies() {
    refused_with(&[
        (b"\r\n", reply::ERROR),
        (b"bogus\r\n", reply::ERROR),
        (b"set k 0 0\r\n", reply::ERROR),
        (b"set k x 0 1\r\n", reply::BAD_FORMAT),
        (b"set k 0 0 -1\r\n", reply::BAD_FORMAT),
        (b"incr k x\r\n", reply::BAD_DELTA),
        (b"touch k x\r\n", reply::BAD_EXPTIME),
        (b"gat x k\r\n", reply::BAD_EXPTIME),
        (b"delete k 5\r\n", reply::BAD_DELETE),
    ]);
    let long = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(err(long.as_bytes()), reply::BAD_FORMAT);
    // As in memcached, exactly <bytes> + 2 bytes are consumed; the rest is the next line.
    let v = drive(&[b"set k 0 0 1\r\nab\r\n"]);
    let replies: Vec<_> = v.iter().map(|r| r.as_ref().unwrap_err().reply).collect();
    assert_eq!(replies, [reply::BAD_DATA_CHUNK, reply::ERROR]);
}

#[test]
fn too_large_value_is_swallowed_without_buffering() {
    let v = drive(&[
        b"set k 0 0 2000\r\n",
        &[b'x'; 1000],
        &[b'x'; 1002],
        b"get k\r\n",
    ]);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::TOO_LARGE);
    assert!(matches!(
        v[1],
        Ok(Request::Op {
            op: Command::Retrieve(_),
            ..
        })
    ));
    // A 2 GiB length is refused at once.
    assert_eq!(
        drive(&[b"set k 0 0 2147483600\r\n"])[0]
            .as_ref()
            .unwrap_err()
            .reply,
        reply::TOO_LARGE
    );
}

#[test]
fn line_without_newline_is_limited() {
    let v = drive(&[&[b'a'; 5000]]);
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::LINE_TOO_LONG);
    assert!(v[0].as_ref().unwrap_err().close);
}

#[test]
fn multiget_beyond_24_tokens_keeps_every_key() {
    let keys: Vec<String> = (0..60).map(|i| format!("key{i}")).collect();
    let line = format!("get  {}\r\n", keys.join("  "));
    let Ok(Request::Op {
        op: Command::Retrieve(Retrieve { keys: got, .. }),
        ..
    }) = one(line.as_bytes())
    else {
        panic!()
    };
    let got: Vec<&[u8]> = got.iter().map(|k| &k[..]).collect();
    let want: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    assert_eq!(got, want);
}

#[test]
fn gat_without_keys_is_end() {
    assert_eq!(one(b"gat 10\r\n").unwrap(), Request::Answered(reply::END));
}

#[test]
fn bare_newline_ends_a_line() {
    assert!(matches!(one(b"get a\n"), Ok(Request::Op { .. })));
}

/// Inputs made of `pieces` of the protocol with up to `noise` arbitrary bytes between them.
pub(in crate::protocol) fn corpus(
    pieces: Vec<&'static [u8]>,
    noise: usize,
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(pieces).prop_map(|p| p.to_vec()),
            prop::collection::vec(any::<u8>(), 0..noise)
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

/// Cutting `input` at `at`, or at every byte, gives the decoder's outcome for the whole.
pub(in crate::protocol) fn check_cuts(input: &[u8], at: Option<usize>) {
    let whole = drive(&[input]);
    let cuts: Vec<usize> = at.map_or_else(|| (0..=input.len()).collect(), |at| vec![at]);
    for at in cuts {
        assert_eq!(drive(&[&input[..at], &input[at..]]), whole, "cut at {at}");
    }
    if at.is_none() {
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(drive(&bytes), whole, "byte by byte");
    }
}

fn text_pieces() -> Vec<&'static [u8]> {
    vec![
        &b"get "[..],
        b"gets ",
        b"gat 10 ",
        b"set ",
        b"cas ",
        b"add ",
        b"incr ",
        b"decr ",
        b"delete ",
        b"touch ",
        b"noreply",
        b"k",
        b"key ",
        b"0 ",
        b"5 ",
        b"-1 ",
        b"3 ",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"abc",
        b"flush_all ",
        b"version",
        b"quit",
        b"stats",
        b"verbosity 1",
        b"99999999999 ",
        b"HTTP/1.1",
    ]
}

proptest! {
    #[test]
    fn never_panics_and_split_points_do_not_matter(input in corpus(text_pieces(), 8), cut in any::<prop::sample::Index>()) {
        check_cuts(&input, Some(cut.index(input.len() + 1)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = drive(&[&input]);
    }
}

#[test]
fn a_request_cut_at_every_byte_gives_the_same_replies() {
    let input: &[u8] = b"set a 1 2 3\r\nabc\r\nget a b\r\ndelete a noreply\r\nincr n 5\r\nset k 0 0 2000\r\nbogus\r\ngat 1 a\r\ncas a 0 0 1 5\r\nx\r\nversion\r\n";
    check_cuts(input, None);
}

#[test]
fn numbers_memcached_would_truncate_are_refused_at_once() {
    // memcached narrows these to 32 bits; the proxy refuses them without waiting for data.
    assert_eq!(err(b"set k 0 0 99999999999\r\n"), reply::BAD_FORMAT);
    assert_eq!(err(b"set k 0 0 4294967297\r\n"), reply::BAD_FORMAT);
    assert_eq!(err(b"set k 4294967301 0 1\r\n"), reply::BAD_FORMAT);
}

#[test]
fn a_nul_byte_ends_the_line_as_in_memcached() {
    let v = drive(&[b"set a\x00b 0 0 1\r\nx\r\nget a\x00b\r\n"]);
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::ERROR);
    assert_eq!(v[1].as_ref().unwrap_err().reply, reply::ERROR);
    let Ok(Request::Op {
        op: Command::Retrieve(Retrieve { keys, .. }),
        ..
    }) = &v[2]
    else {
        panic!()
    };
    assert_eq!(&keys[0][..], b"a");
}

#[test]
fn too_large_set_names_the_key_to_forget() {
    let v = drive(&[b"set k 0 0 2000\r\n"]);
    assert_eq!(
        v[0].as_ref().unwrap_err().forget,
        Some(Box::new(Keyed::Delete {
            key: Bytes::from_static(b"k")
        }))
    );
    let v = drive(&[b"append k 0 0 2000\r\n"]);
    assert_eq!(v[0].as_ref().unwrap_err().forget, None);
}
