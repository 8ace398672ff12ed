use proptest::prelude::*;

use super::*;

const MAX: usize = 64;

fn keys(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|k| Bytes::from(k.to_string())).collect()
}

fn values(keys: &[Bytes]) -> Expect<'_> {
    Expect {
        kind: ReplyKind::Values,
        keys,
        max_value_size: MAX,
    }
}

const LINE: Expect<'static> = Expect {
    kind: ReplyKind::Line,
    keys: &[],
    max_value_size: MAX,
};

fn once(expect: Expect<'_>, input: &[u8]) -> Result<Option<Response>, ProtocolError> {
    parse(expect, &mut BytesMut::from(input))
}

#[test]
fn values_need_the_whole_answer() {
    let asked = keys(&["a", "b"]);
    let full = b"VALUE a 5 3 77\r\nabc\r\nVALUE b 0 0\r\n\r\nEND\r\nSTORED\r\n";
    for cut in 0..full.len() - 8 {
        assert_eq!(once(values(&asked), &full[..cut]), Ok(None), "cut {cut}");
    }
    let mut b = BytesMut::from(&full[..]);
    let Some(Response::Values(v)) = parse(values(&asked), &mut b).unwrap() else {
        panic!()
    };
    assert_eq!(v.len(), 2);
    assert_eq!(
        (
            v[0].key(),
            v[0].asked,
            v[0].flags,
            v[0].cas,
            &v[0].data()[..]
        ),
        (&b"a"[..], 0, 5, Some(77), &b"abc"[..])
    );
    assert_eq!(
        (&v[1].block[..], v[1].asked),
        (&b"VALUE b 0 0\r\n\r\n"[..], 1)
    );
    assert_eq!(&b[..], b"STORED\r\n");
}

#[test]
fn error_line_ends_a_retrieval() {
    assert_eq!(
        once(values(&keys(&["k"])), b"SERVER_ERROR out of memory\r\n").unwrap(),
        Some(Response::Line(Bytes::from_static(
            b"SERVER_ERROR out of memory\r\n"
        )))
    );
}

#[test]
fn meta_get_hit_and_miss() {
    let meta = Expect {
        kind: ReplyKind::Meta,
        ..LINE
    };
    let mut b = BytesMut::from(&b"VA 2 f9 t-1\r\nhi\r\nEN\r\n"[..]);
    assert_eq!(
        parse(meta, &mut b).unwrap(),
        Some(Response::Meta {
            flags: 9,
            ttl: -1,
            data: Bytes::from_static(b"hi")
        })
    );
    assert_eq!(
        parse(meta, &mut b).unwrap(),
        Some(Response::Line(Bytes::from_static(b"EN\r\n")))
    );
    assert!(once(meta, b"VA 18446744073709551614 f0\r\n").is_err());
}

#[test]
fn garbage_is_a_protocol_error() {
    assert!(once(values(&keys(&["k"])), b"HELLO\r\n").is_err());
    assert!(once(values(&keys(&["k"])), b"VALUE k x 1\r\na\r\nEND\r\n").is_err());
    assert!(once(values(&keys(&["k"])), b"VALUE k 0 1 2 3\r\na\r\nEND\r\n").is_err());
    assert!(once(values(&keys(&["k"])), b"VALUE k 0 1\r\nab\r\nEND\r\n").is_err());
    assert!(once(LINE, b"HELLO\r\n").is_err());
    assert!(once(LINE, b"END\r\n").is_err());
    assert!(once(LINE, b"STORED\n").is_err());
}

#[test]
fn a_length_is_never_trusted() {
    let asked = keys(&["k"]);
    // Refused at the header: nothing waits for 2^64 bytes, nothing overflows.
    for len in [
        "18446744073709551614",
        "18446744073709551616",
        "65",
        "-1",
        "+1",
        " 1",
        "1x",
    ] {
        let line = format!("VALUE k 0 {len}\r\n");
        assert!(once(values(&asked), line.as_bytes()).is_err(), "{len}");
    }
    assert!(once(values(&asked), b"VALUE k 0 64\r\n").unwrap().is_none());
}

#[test]
fn a_line_is_bounded() {
    let long = vec![b'S'; LINE_MAX];
    assert!(once(LINE, &long).is_err());
    assert!(once(LINE, &long[..LINE_MAX - 1]).unwrap().is_none());
    assert!(once(values(&keys(&["k"])), &long).is_err());
}

#[test]
fn a_value_for_a_key_not_asked_is_a_protocol_error() {
    let asked = keys(&["k"]);
    assert!(once(values(&asked), b"VALUE other_key 0 5\r\n").is_err());
    // Out of order, or more often than asked: memcached never answers so.
    let asked = keys(&["a", "b"]);
    assert!(once(values(&asked), b"VALUE b 0 1\r\nx\r\nVALUE a 0 1\r\n").is_err());
    assert!(once(values(&asked), b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\n").is_err());
}

#[test]
fn key_order_follows_memcached_with_misses_and_duplicates() {
    // `get x miss x y x`: memcached answers x, x, y, x.
    let asked = keys(&["x", "miss", "x", "y", "x"]);
    let mut order = KeyOrder::new(&asked);
    assert_eq!(order.place(b"x"), Some(0));
    assert_eq!(order.place(b"x"), Some(2));
    assert_eq!(order.place(b"y"), Some(3));
    assert_eq!(order.place(b"x"), Some(4));
    assert_eq!(order.place(b"x"), None);
}

#[test]
fn pair_yields_a_slot_per_key_asked() {
    let asked = keys(&["a", "miss", "b", "a"]);
    let input = b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE a 0 1\r\n3\r\nEND\r\n";
    let Some(Response::Values(v)) = once(values(&asked), input).unwrap() else {
        panic!()
    };
    let slots: Vec<Option<String>> = pair(v, asked.len())
        .map(|s| s.map(|v| String::from_utf8(v.data().to_vec()).unwrap()))
        .collect();
    assert_eq!(
        slots,
        [Some("1".into()), None, Some("2".into()), Some("3".into())]
    );
}

/// Feeds `chunks` in turn, taking answers off as the connection does, one per expectation of
/// `plan` (a retrieval of `asked`, then a line, cycling). Returns every outcome up to the first
/// error.
fn drive(asked: &[Bytes], chunks: &[&[u8]]) -> Vec<Result<Response, ProtocolError>> {
    let plan = [values(asked), LINE];
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match parse(plan[out.len() % 2], &mut buf) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

/// Answers made of the pieces a backend sends, well formed or slightly off.
fn answer_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"VALUE a 0 1\r\nx\r\n".to_vec()),
        Just(b"VALUE b 7 3 99\r\nabc\r\n".to_vec()),
        Just(b"VALUE c 0 2\r\nxy\r\n".to_vec()),
        Just(b"VALUE a 0 18446744073709551614\r\n".to_vec()),
        Just(b"VALUE a 0 65\r\n".to_vec()),
        Just(b"END\r\n".to_vec()),
        Just(b"STORED\r\n".to_vec()),
        Just(b"42\r\n".to_vec()),
        Just(b"SERVER_ERROR out of memory\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_split_gives_the_same_outcome(
        input in prop_oneof![answer_bytes(), prop::collection::vec(any::<u8>(), 0..200)],
    ) {
        let asked = keys(&["a", "b", "a"]);
        let whole = drive(&asked, &[&input]);
        for cut in 0..=input.len() {
            let (head, tail) = input.split_at(cut);
            prop_assert_eq!(&drive(&asked, &[head, tail]), &whole, "cut at {}", cut);
        }
        // A byte at a time: the hot path of a slow backend.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&drive(&asked, &bytes), &whole);
        // Every value handed out was asked for, in memcached's order.
        for r in &whole {
            if let Ok(Response::Values(v)) = r {
                let mut order = KeyOrder::new(&asked);
                for value in v {
                    prop_assert_eq!(order.place(value.key()), Some(value.asked));
                    prop_assert!(value.data().len() <= MAX);
                }
            }
        }
    }

    #[test]
    fn well_formed_answers_parse_back(
        hits in prop::collection::vec((any::<bool>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..MAX)), 1..6),
    ) {
        let asked: Vec<Bytes> = (0..hits.len()).map(|i| Bytes::from(format!("k{i}"))).collect();
        let mut input = Vec::new();
        for (i, (hit, flags, data)) in hits.iter().enumerate() {
            if *hit {
                input.extend(format!("VALUE k{i} {flags} {}\r\n", data.len()).bytes());
                input.extend(data);
                input.extend(b"\r\n");
            }
        }
        input.extend(b"END\r\n");
        let Some(Response::Values(v)) = once(values(&asked), &input).unwrap() else {
            panic!("not values")
        };
        let slots: Vec<Option<Value>> = pair(v, asked.len()).collect();
        for ((hit, flags, data), slot) in hits.iter().zip(slots) {
            prop_assert_eq!(slot.is_some(), *hit);
            if let Some(s) = slot {
                prop_assert_eq!((s.flags, &s.data()[..]), (*flags, &data[..]));
            }
        }
    }
}
