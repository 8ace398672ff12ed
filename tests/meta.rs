//! Exact bytes of the meta commands (`mg ms md ma mn me`) of memcached 1.6.18, through memroute
//! (or, with `MEMROUTE_TEST_TARGET=direct`, against memcached itself to prove every row).
//!
//! Each scenario is a table of `(request, expected reply)` rows, run three ways on fresh
//! processes: one request at a time, all rows pipelined in one write, and fed byte by byte.
//! Scenarios that show CAS values use one backend, so the numbers are one memcached's.

mod common;

use common::Target;

type Rows<'a> = &'a [(&'a [u8], &'a [u8])];

/// Runs `rows` one by one, pipelined, and byte by byte, each on a fresh target.
#[track_caller]
fn check(backends: usize, rows: Rows) {
    let all_requests: Vec<u8> = rows.iter().flat_map(|(q, _)| q.to_vec()).collect();
    let all_replies: Vec<u8> = rows.iter().flat_map(|(_, a)| a.to_vec()).collect();
    {
        let t = Target::new(backends);
        t.client().roundtrips(rows);
    }
    {
        let t = Target::new(backends);
        let mut c = t.client();
        c.roundtrip(&all_requests, &all_replies);
    }
    {
        let t = Target::new(backends);
        let mut c = t.client();
        for b in &all_requests {
            c.send(std::slice::from_ref(b));
        }
        c.expect(&all_replies);
    }
}

#[test]
fn mg_returns_flags_in_request_order() {
    check(
        1,
        rows![
            b"mg k v\r\n" => b"EN\r\n",
            b"mg nosuch O9 k v\r\n" => b"EN O9 knosuch\r\n",
            b"ms k 2 F5 T0\r\nhi\r\n" => b"HD\r\n",
            b"mg k\r\n" => b"HD\r\n",
            b"mg k v\r\n" => b"VA 2\r\nhi\r\n",
            b"mg k s v f t c\r\n" => b"VA 2 s2 f5 t-1 c1\r\nhi\r\n",
            b"mg k k O123 f\r\n" => b"HD kk O123 f5\r\n",
            b"mg k h l\r\n" => b"HD h1 l0\r\n",
            // T applies where it stands: t before it shows the old TTL, after it the new.
            b"mg k t T100\r\n" => b"HD t-1\r\n",
            b"mg k T200 t\r\n" => b"HD t200\r\n",
            b"mg k t t\r\n" => b"CLIENT_ERROR duplicate flag\r\n",
            b"mg k u P L\r\n" => b"HD\r\n",
        ],
    );
}

#[test]
fn mg_quiet_hides_only_misses() {
    check(
        3,
        rows![
            b"ms a 1\r\n1\r\n" => b"HD\r\n",
            b"mg miss v q\r\n" => b"",
            b"mg a v q\r\n" => b"VA 1\r\n1\r\n",
            b"mg a q\r\n" => b"HD\r\n",
            b"mg miss2 q k O1\r\n" => b"",
            b"mn\r\n" => b"MN\r\n",
            b"mg miss3 q Tx\r\n" => b"CLIENT_ERROR bad token in command line format\r\n",
            b"mn\r\n" => b"MN\r\n",
        ],
    );
}

#[test]
fn mg_vivify_and_recache_hand_out_one_win() {
    check(
        1,
        rows![
            b"mg v1 N30 v t\r\n" => b"VA 0 t30 W\r\n\r\n",
            b"mg v1 N30 v t\r\n" => b"VA 0 t30 Z\r\n\r\n",
            b"ms r1 1 T10\r\nx\r\n" => b"HD\r\n",
            b"mg r1 R30 v\r\n" => b"VA 1 W\r\nx\r\n",
            b"mg r1 R30 v\r\n" => b"VA 1 Z\r\nx\r\n",
            b"mg r1 R5 v\r\n" => b"VA 1 Z\r\nx\r\n",
        ],
    );
}

#[test]
fn stale_while_revalidate_with_md_invalidate() {
    check(
        1,
        rows![
            b"ms s 3\r\nold\r\n" => b"HD\r\n",
            b"md s I T30\r\n" => b"HD\r\n",
            b"mg s v c t\r\n" => b"VA 3 c2 t30 X W\r\nold\r\n",
            b"mg s v\r\n" => b"VA 3 Z X\r\nold\r\n",
            // Only a set with the stale item's CAS replaces it, and the new value is fresh.
            b"ms s 3 C1\r\nnew\r\n" => b"EX\r\n",
            b"ms s 3 C2 I\r\nnew\r\n" => b"HD\r\n",
            b"mg s v\r\n" => b"VA 3\r\nnew\r\n",
            b"ms s 3\r\nnew\r\n" => b"HD\r\n",
            b"mg s v\r\n" => b"VA 3\r\nnew\r\n",
        ],
    );
}

#[test]
fn ms_modes_cas_and_returned_flags() {
    check(
        1,
        rows![
            b"ms k 1 MR\r\nx\r\n" => b"NS\r\n",
            b"ms k 1 ME\r\nx\r\n" => b"HD\r\n",
            b"ms k 1 ME\r\ny\r\n" => b"NS\r\n",
            b"ms k 1 MA\r\nz\r\n" => b"HD\r\n",
            b"ms k 1 MP\r\na\r\n" => b"HD\r\n",
            b"mg k v c\r\n" => b"VA 3 c3\r\naxz\r\n",
            b"ms k 1 C99\r\nq\r\n" => b"EX\r\n",
            b"ms k 1 C3 c\r\nq\r\n" => b"HD c4\r\n",
            b"ms k 1 MS O77 k c F3 T0\r\nw\r\n" => b"HD O77 kk c5\r\n",
            b"mg k v f\r\n" => b"VA 1 f3\r\nw\r\n",
            b"ms k 0 q\r\n\r\n" => b"",
            b"ms k 1 q MR C1\r\nx\r\n" => b"EX\r\n",
            b"ms new 1 q MR\r\nx\r\n" => b"NS\r\n",
            b"mn\r\n" => b"MN\r\n",
            b"ms k 1 MX\r\nx\r\n" => b"CLIENT_ERROR invalid mode for ms M token\r\n",
            b"ms k 1 MSS\r\nx\r\n" => b"CLIENT_ERROR incorrect length for M token\r\n",
        ],
    );
}

#[test]
fn md_deletes_and_marks_stale() {
    check(
        1,
        rows![
            b"md k\r\n" => b"NF\r\n",
            b"md k q\r\n" => b"NF\r\n",
            b"ms k 1\r\nx\r\n" => b"HD\r\n",
            b"md k C99\r\n" => b"EX\r\n",
            b"md k O5 k\r\n" => b"HD O5 kk\r\n",
            b"mg k\r\n" => b"EN\r\n",
            b"ms k 1\r\nx\r\n" => b"HD\r\n",
            b"md k q\r\n" => b"",
            b"mn\r\n" => b"MN\r\n",
            b"md k E\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            b"md k q q\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ],
    );
}

#[test]
fn ma_counts_with_modes_vivify_and_quiet() {
    check(
        1,
        rows![
            b"ma c\r\n" => b"NF\r\n",
            b"ma c N0 J10 v\r\n" => b"VA 2\r\n10\r\n",
            b"ma c\r\n" => b"HD\r\n",
            b"ma c v\r\n" => b"VA 2\r\n12\r\n",
            b"ma c MD D5 v t\r\n" => b"VA 1 t-1\r\n7\r\n",
            b"ma c M- D100 v\r\n" => b"VA 1\r\n0\r\n",
            b"ma c M+ D3 v O1 k\r\n" => b"VA 1 O1 kc\r\n3\r\n",
            b"ma c q\r\n" => b"",
            b"ma c q v\r\n" => b"",
            b"ma c v\r\n" => b"VA 1\r\n6\r\n",
            b"ma nosuch q\r\n" => b"NF\r\n",
            b"ms t 3\r\nabc\r\n" => b"HD\r\n",
            b"ma t\r\n" => b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            b"ma c MX\r\n" => b"CLIENT_ERROR invalid mode for ma M token\r\n",
            b"ma c Dx\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            b"mn\r\n" => b"MN\r\n",
        ],
    );
}

#[test]
fn me_and_mn() {
    check(
        1,
        rows![
            b"me k\r\n" => b"EN\r\n",
            b"me\r\n" => b"CLIENT_ERROR bad command line format\r\n",
            b"ms k 2 T0\r\nhi\r\n" => b"HD\r\n",
            b"me k\r\n" => b"ME k exp=-1 la=0 cas=1 fetch=no cls=1 size=62\r\n",
            b"mn\r\n" => b"MN\r\n",
            b"mn extra tokens\r\n" => b"MN\r\n",
        ],
    );
}

#[test]
fn base64_keys() {
    check(
        1,
        rows![
            b"ms Zm9v 2 b\r\nhi\r\n" => b"HD\r\n",
            b"get foo\r\n" => b"VALUE foo 0 2\r\nhi\r\nEND\r\n",
            b"mg Zm9v b v k\r\n" => b"VA 2 kZm9v b\r\nhi\r\n",
            // Characters outside the alphabet are skipped; `k` echoes the re-encoded key.
            b"mg Zm!9v b k\r\n" => b"HD kZm9v b\r\n",
            b"mg Zm9 b v\r\n" => b"CLIENT_ERROR error decoding key\r\n",
            b"ms Zm9 1 b\r\nx\r\n" => b"CLIENT_ERROR error decoding key\r\n",
            b"md Zm9 b\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            b"ma Zm9 b\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            b"me Zm9 b\r\n" => b"CLIENT_ERROR bad command line format\r\n",
            b"me Zm9v b\r\n" => b"ME Zm9v exp=-1 la=0 cas=1 fetch=yes cls=1 size=64\r\n",
            b"md Zm9v b q\r\n" => b"",
            b"mg foo v\r\n" => b"EN\r\n",
        ],
    );
}

#[test]
fn bad_meta_input_keeps_the_connection() {
    let long_key = "k".repeat(251);
    let mg_long = format!("mg {long_key} v\r\n");
    let ms_long = format!("ms {long_key} 2\r\nmn\r\n");
    let md_long = format!("md {long_key}\r\n");
    let ma_long = format!("ma {long_key}\r\n");
    let flags18 = "mg k v s t c f h l k O1 N1 T1 R1 u P L I Z Y\r\n";
    let md18 = "md k v s t c f h l k O1 N1 T1 R1 u P L I Z Y\r\n";
    let ms17 = "ms k 1 v s t c f h l k O1 N1 T1 R1 u P L I Y\r\nmn\r\n";
    let opaque = format!("ms k 1 O{}\r\nx\r\n", "9".repeat(40));
    check(
        1,
        rows![
            b"mx k\r\n" => b"ERROR\r\n",
            b"mg\r\n" => b"ERROR\r\n",
            b"ms\r\n" => b"ERROR\r\n",
            b"mg k v v\r\n" => b"CLIENT_ERROR duplicate flag\r\n",
            b"mg k E\r\n" => b"CLIENT_ERROR invalid flag\r\n",
            b"mg k \xff\r\n" => b"CLIENT_ERROR duplicate flag\r\n",
            b"mg k N\r\n" => b"CLIENT_ERROR bad token in command line format\r\n",
            b"ms k 1 Fx\r\nx\r\n" => b"CLIENT_ERROR bad command line format\r\n",
            b"ms k 1 Cx\r\nx\r\n" => b"CLIENT_ERROR bad token in command line format\r\n",
            b"ms k 1 E\r\nx\r\n" => b"CLIENT_ERROR invalid flag\r\n",
            b"ma k Jx\r\n" => b"CLIENT_ERROR invalid or duplicate flag\r\n",
            mg_long.as_bytes() => b"CLIENT_ERROR bad command line format\r\n",
            // Before the length is read, an error leaves the data block to be read as a command.
            ms_long.as_bytes() => b"CLIENT_ERROR bad command line format\r\nMN\r\n",
            b"ms k\r\nmn\r\n" => b"CLIENT_ERROR bad command line format\r\nMN\r\n",
            b"ms k x\r\nmn\r\n" => b"CLIENT_ERROR bad command line format\r\nMN\r\n",
            b"ms k -1\r\nmn\r\n" => b"CLIENT_ERROR bad command line format\r\nMN\r\n",
            md_long.as_bytes() => b"CLIENT_ERROR bad command line format\r\n",
            ma_long.as_bytes() => b"CLIENT_ERROR bad command line format\r\n",
            flags18.as_bytes() => b"CLIENT_ERROR options flags are too long\r\n",
            md18.as_bytes() => b"CLIENT_ERROR options flags too long\r\n",
            ms17.as_bytes() => b"CLIENT_ERROR options flags too long\r\nMN\r\n",
            opaque.as_bytes() => b"CLIENT_ERROR opaque token too long\r\n",
            // Wrong data length: the block is not followed by \r\n.
            b"ms k 1\r\nxyz\r\n" => b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
            b"ms k 1 q\r\nxyz\r\n" => b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
            b"mn\r\n" => b"MN\r\n",
        ],
    );
}

#[test]
fn errors_memcached_finds_after_the_lookup_come_from_the_backend() {
    let opaque = "O".to_string() + &"9".repeat(40);
    let mg_hit = format!("mg k v {opaque}\r\n");
    let mg_miss = format!("mg nosuch {opaque}\r\n");
    let ma = format!("ma c {opaque}\r\n");
    let key250 = "k".repeat(250);
    let ms250 = format!("ms {key250} 1\r\nx\r\n");
    let mg250 = format!("mg {key250} s k\r\n");
    let mg250_reply = format!("HD s1 k{key250}\r\n");
    check(
        1,
        rows![
            b"ms k 1\r\nx\r\n" => b"HD\r\n",
            mg_hit.as_bytes() => b"CLIENT_ERROR opaque token too long\r\n",
            mg_miss.as_bytes() => b"CLIENT_ERROR opaque token too long\r\n",
            b"ms c 1\r\n5\r\n" => b"HD\r\n",
            // ma counts before it notices the opaque: the counter moved.
            ma.as_bytes() => b"CLIENT_ERROR opaque token too long\r\n",
            b"mg c v\r\n" => b"VA 1\r\n6\r\n",
            ms250.as_bytes() => b"HD\r\n",
            mg250.as_bytes() => mg250_reply.as_bytes(),
        ],
    );
}

#[test]
fn too_large_ms_is_swallowed_and_deletes_the_item() {
    let t = Target::new(1);
    let mut c = t.client();
    c.roundtrip(b"ms big 2\r\nhi\r\n", b"HD\r\n");
    let mut req = b"ms big 2000000 T0\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'x', 2_000_000));
    req.extend_from_slice(b"\r\nmn\r\n");
    c.roundtrip(&req, b"SERVER_ERROR object too large for cache\r\nMN\r\n");
    c.roundtrip(b"mg big v\r\n", b"EN\r\n");
    // A value just under the limit goes through whole.
    let mut req = b"ms big 1000000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'y', 1_000_000));
    req.extend_from_slice(b"\r\n");
    c.roundtrip(&req, b"HD\r\n");
    c.send(b"mg big s\r\n");
    c.expect(b"HD s1000000\r\n");
}

#[test]
fn meta_and_classic_pipelined_across_servers_answer_in_order() {
    let keys: Vec<String> = common::keys("mix", 30);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        req.extend_from_slice(format!("ms {k} 1 q\r\n{}\r\n", i % 10).as_bytes());
        req.extend_from_slice(format!("mg {k} v q k\r\n").as_bytes());
        want.extend_from_slice(format!("VA 1 k{k}\r\n{}\r\n", i % 10).as_bytes());
        req.extend_from_slice(format!("mg nosuch{k} v q\r\nget {k}\r\n").as_bytes());
        want.extend_from_slice(format!("VALUE {k} 0 1\r\n{}\r\nEND\r\n", i % 10).as_bytes());
    }
    req.extend_from_slice(b"mn\r\n");
    want.extend_from_slice(b"MN\r\n");
    let t = Target::new(3);
    let mut c = t.client();
    c.roundtrip(&req, &want);
    if !t.is_direct() {
        t.assert_keys_on_every_backend(&keys);
    }
}

#[test]
fn base64_and_plain_keys_reach_the_same_server() {
    let Some((t, mut c)) = Target::memroute_only("checks where memroute put the keys", 3) else {
        return;
    };
    let keys = common::keys("b64", 30);
    for k in &keys {
        let encoded = encode(k.as_bytes());
        c.roundtrip(format!("ms {encoded} 1 b\r\nx\r\n").as_bytes(), b"HD\r\n");
        // The plain form finds it through memroute...
        c.roundtrip(format!("mg {k} v\r\n").as_bytes(), b"VA 1\r\nx\r\n");
        // ...because exactly one backend holds it, the one the plain key hashes to.
        let holders = t.holders(k);
        assert_eq!(holders.len(), 1, "{k}: {holders:?}");
    }
    t.assert_keys_on_every_backend(&keys);
    // The plain set of a key lands where the base64 one did.
    for k in &keys {
        let before = t.holders(k);
        c.set(k, b"y");
        assert_eq!(t.holders(k), before);
    }
}

#[test]
fn stats_count_meta_commands() {
    let Some((_t, mut c)) = Target::memroute_only("memroute's own counters", 1) else {
        return;
    };
    c.roundtrip(
        b"ms a 1\r\nx\r\nmg a\r\nmg b q\r\nmn\r\n",
        b"HD\r\nHD\r\nMN\r\n",
    );
    let stats = c.stats();
    for (name, count) in [
        ("cmd_mg", "2"),
        ("cmd_ms", "1"),
        ("cmd_mn", "1"),
        ("cmd_md", "0"),
    ] {
        let want = (name.to_string(), count.to_string());
        assert!(stats.contains(&want), "{want:?} not in {stats:?}");
    }
}

/// Standard base64 with padding (what `k` echoes and clients send).
fn encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
