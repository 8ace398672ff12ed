use proptest::prelude::*;

use super::*;
use crate::protocol::command::Command;
use crate::protocol::request::tests::{check_cuts, corpus, drive, err, one, refused_with};

fn meta(input: &[u8]) -> MetaRequest {
    match one(input) {
        Ok(Request::Op {
            op: Command::Keyed(Keyed::Meta(m)),
            ..
        }) => m,
        other => panic!("{other:?}"),
    }
}

#[test]
fn valid_requests_go_upstream_without_q() {
    let m = meta(b"mg k v q O123 k\r\n");
    assert_eq!(
        (m.verb, &m.key[..], &m.line[..], m.quiet),
        (MetaVerb::Get, &b"k"[..], &b"mg k v O123 k"[..], true)
    );
    assert!(m.has(b'v') && m.has(b'O') && !m.has(b't'));
    let m = meta(b"ms k 3 T0 F5\r\nabc\r\n");
    assert_eq!(&m.line[..], b"ms k 3 T0 F5");
    assert_eq!(m.data.as_deref(), Some(&b"abc"[..]));
    assert_eq!(one(b"mn\r\n").unwrap(), Request::MetaNoop);
    assert_eq!(one(b"mn x y\r\n").unwrap(), Request::MetaNoop);
    assert_eq!(meta(b"me k\r\n").verb, MetaVerb::Debug);
}

#[test]
fn base64_keys_route_by_their_bytes() {
    let m = meta(b"mg Zm9vYmFy b v\r\n");
    assert_eq!(&m.key[..], b"foobar");
    assert_eq!(&m.line[..], b"mg Zm9vYmFy b v");
    assert_eq!(&meta(b"me Zm9v b\r\n").key[..], b"foo");
    // memcached skips characters outside the alphabet and stops after padding.
    assert_eq!(base64_decode(b"Zm9v!YmFy"), Some(b"foobar".to_vec()));
    assert_eq!(base64_decode(b"Zg==Zm9v"), Some(b"f".to_vec()));
    assert_eq!(base64_decode(b"Zm9"), None);
    assert_eq!(base64_decode(b"===="), None);
    assert_eq!(base64_decode(b""), None);
    assert_eq!(err(b"mg Zm9 b v\r\n"), reply::META_BAD_KEY_DECODE);
    assert_eq!(err(b"md Zm9 b\r\n"), reply::META_BAD_FLAG);
    assert_eq!(err(b"me Zm9 b\r\n"), reply::BAD_FORMAT);
}

#[test]
fn errors_are_memcacheds_lines_per_command() {
    refused_with(&[
        (b"mz k\r\n", reply::ERROR),
        (b"mg\r\n", reply::ERROR),
        (b"me\r\n", reply::BAD_FORMAT),
        (b"mg k v v\r\n", reply::META_DUPLICATE_FLAG),
        (b"mg k E\r\n", reply::META_INVALID_FLAG),
        (b"md k E\r\n", reply::META_BAD_FLAG),
        (b"ma k v v\r\n", reply::META_BAD_FLAG),
        (b"mg k Tx\r\n", reply::META_BAD_TOKEN),
        (b"ma k MX\r\n", reply::META_BAD_MA_MODE),
    ]);
    let long = format!("mg {} v\r\n", "k".repeat(251));
    assert_eq!(err(long.as_bytes()), reply::BAD_FORMAT);
    let flags17 = "mg k a b c d e f g h i j k l m n o p q\r\n";
    assert_ne!(err(flags17.as_bytes()), reply::META_FLAGS_ARE_TOO_LONG);
    let flags18 = "mg k v s t c f h l k O1 q N1 T1 R1 u P L I Z\r\n";
    assert_eq!(err(flags18.as_bytes()), reply::META_FLAGS_ARE_TOO_LONG);
    let flags18 = "md k v s t c f h l k O1 q N1 T1 R1 u P L I Z\r\n";
    assert_eq!(err(flags18.as_bytes()), reply::META_FLAGS_TOO_LONG);
    let opaque = format!("md k O{}\r\n", "1".repeat(40));
    assert_eq!(err(opaque.as_bytes()), reply::META_OPAQUE_TOO_LONG);
    // mg finds a long opaque only after the lookup: the backend answers it.
    let opaque = format!("mg k O{}\r\n", "1".repeat(40));
    assert!(one(opaque.as_bytes()).is_ok());
}

#[test]
fn ms_errors_swallow_the_data_block_only_after_the_length() {
    // Before the flags: the data is read as the next command.
    let v = drive(&[b"ms k\r\nmn\r\n"]);
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::BAD_FORMAT);
    assert_eq!(v[1], Ok(Request::MetaNoop));
    let v = drive(&[b"ms k x\r\nmn\r\n"]);
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::BAD_FORMAT);
    assert_eq!(v[1], Ok(Request::MetaNoop));
    // A flag error: the 4 + 2 bytes after the line are swallowed.
    let v = drive(&[b"ms k 4 E\r\nmn\r\n\r\nmn\r\n"]);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::META_INVALID_FLAG);
    assert_eq!(v[1], Ok(Request::MetaNoop));
    let v = drive(&[b"ms k 2 MX\r\nab\r\n"]);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::META_BAD_MS_MODE);
    // Too large: swallowed without buffering, and the stored item is removed.
    let v = drive(&[b"ms Zm9v 2000 b T0\r\n", &[b'x'; 2002], b"mn\r\n"]);
    let e = v[0].as_ref().unwrap_err();
    assert_eq!(e.reply, reply::TOO_LARGE);
    let Some(Keyed::Meta(md)) = e.forget.as_deref() else {
        panic!("{e:?}")
    };
    assert_eq!(
        (&md.line[..], &md.key[..]),
        (&b"md Zm9v b"[..], &b"foo"[..])
    );
    assert_eq!(v[1], Ok(Request::MetaNoop));
    // Bad data chunk.
    let v = drive(&[b"ms k 1 q\r\nabc\r\n"]);
    assert_eq!(v[0].as_ref().unwrap_err().reply, reply::BAD_DATA_CHUNK);
}

#[test]
fn quiet_hides_what_memcached_hides() {
    let q = |line: &[u8]| meta(line);
    assert!(q(b"mg k q\r\n").hides(b"EN\r\n"));
    assert!(!q(b"mg k q\r\n").hides(b"HD\r\n"));
    assert!(q(b"ms k 0 q\r\n\r\n").hides(b"HD O1\r\n"));
    assert!(!q(b"ms k 0 q\r\n\r\n").hides(b"NS\r\n"));
    assert!(q(b"md k q\r\n").hides(b"HD\r\n"));
    assert!(!q(b"md k q\r\n").hides(b"NF\r\n"));
    assert!(q(b"ma k q v\r\n").hides(b"VA 1\r\n1\r\n"));
    assert!(!q(b"ma k q\r\n").hides(b"CLIENT_ERROR x\r\n"));
    assert!(!q(b"mg k\r\n").hides(b"EN\r\n"));
}

fn meta_pieces() -> Vec<&'static [u8]> {
    vec![
        &b"mg "[..],
        b"ms ",
        b"md ",
        b"ma ",
        b"mn",
        b"me ",
        b"mx ",
        b"k ",
        b"Zm9v ",
        b"b ",
        b"v ",
        b"q ",
        b"T30 ",
        b"Tx ",
        b"N5 ",
        b"O12 ",
        b"MX ",
        b"ME ",
        b"D3 ",
        b"3 ",
        b"-1 ",
        b"2000 ",
        b"\r\n",
        b"\n",
        b"abc",
        b" ",
    ]
}

proptest! {
    #[test]
    fn never_panics_and_split_points_do_not_matter(input in corpus(meta_pieces(), 6), cut in any::<prop::sample::Index>()) {
        check_cuts(&input, Some(cut.index(input.len() + 1)));
    }

    #[test]
    fn base64_never_panics(input in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = base64_decode(&input);
    }
}

#[test]
fn every_cut_and_byte_by_byte_feeding_give_the_same_outcome() {
    let input: &[u8] = b"mg k v q\r\nms k 3 T0\r\nabc\r\nms k 4 E\r\nxxxx\r\nmd Zm9v b q\r\nma k D2 MI v\r\nmn\r\nms k 2000\r\nme k\r\n";
    check_cuts(input, None);
}
