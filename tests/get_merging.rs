//! Retrievals queued together on one backend connection go out as one multi-key command
//! (src/backend/batch.rs). Every client must still get exactly the answer to what it asked:
//! hits, misses and duplicate keys split back correctly, and nothing merges across a command
//! with another verb, another `gat` time, or a write.

mod common;

use std::thread;

use common::{Client, Memcached, Memroute, sample, value_reply};

/// One memcached that logs every command it receives (`-vv`), behind memroute with one
/// connection, so pipelined requests from a client all reach the same backend connection; and
/// a client of memroute.
fn setup() -> (Memcached, Memroute, Client) {
    setup_with("")
}

/// As [`setup`], with more `[pools.main]` lines.
fn setup_with(pool_extra: &str) -> (Memcached, Memroute, Client) {
    let mc = Memcached::start_with_args(&["-vv"]);
    let proxy = Memroute::builder()
        .pool_with("main", [&mc], &format!("connections = 1\n{pool_extra}"))
        .start();
    let client = proxy.client();
    (mc, proxy, client)
}

/// Sends `request` in one write until memcached's log shows `merged` (the proxy had every
/// request queued before its writer ran) or 50 tries pass; every answer must be `expected`.
fn roundtrip_until_merged(
    mc: &Memcached,
    c: &mut Client,
    request: &[u8],
    expected: &[u8],
    merged: &str,
) {
    for _ in 0..50 {
        c.roundtrip(request, expected);
        if mc.log().contains(merged) {
            return;
        }
    }
    panic!("memcached never received `{merged}`; log:\n{}", mc.log());
}

fn set(c: &mut Client, key: &str, value: &str) {
    c.set(key, value.as_bytes());
}

#[test]
fn pipelined_gets_are_merged_and_each_gets_its_own_answer() {
    let (mc, _proxy, mut c) = setup();
    set(&mut c, "a", "1");
    set(&mut c, "b", "22");
    let expected = [
        value_reply("a", 0, b"1"),
        b"END\r\n".to_vec(),
        b"END\r\n".to_vec(),
        value_reply("a", 0, b"1"),
        b"END\r\n".to_vec(),
        value_reply("b", 0, b"22"),
        value_reply("a", 0, b"1"),
        b"END\r\n".to_vec(),
        value_reply("a", 0, b"1"),
        value_reply("b", 0, b"22"),
        b"END\r\n".to_vec(),
    ]
    .concat();
    roundtrip_until_merged(
        &mc,
        &mut c,
        b"get a\r\nget nosuch\r\nget a\r\nget b a\r\nget a b nosuch\r\n",
        &expected,
        "get a nosuch a b a a b nosuch",
    );
}

#[test]
fn gets_merge_with_gets_only_and_keep_their_cas() {
    let (mc, _proxy, mut c) = setup();
    set(&mut c, "x", "v");
    set(&mut c, "y", "w");
    let (cx, cy) = (c.gets_cas("x"), c.gets_cas("y"));
    let expected = [
        value_reply("x", 0, b"v"),
        b"END\r\n".to_vec(),
        format!("VALUE y 0 1 {cy}\r\nw\r\nEND\r\n").into_bytes(),
        format!("VALUE x 0 1 {cx}\r\nv\r\nEND\r\n").into_bytes(),
        value_reply("y", 0, b"w"),
        b"END\r\n".to_vec(),
    ]
    .concat();
    roundtrip_until_merged(
        &mc,
        &mut c,
        b"get x\r\ngets y\r\ngets x\r\nget y\r\n",
        &expected,
        "gets y x",
    );
}

#[test]
fn gat_with_different_times_is_not_merged() {
    let (_mc, _proxy, mut c) = setup();
    for _ in 0..20 {
        set(&mut c, "t", "v");
        // `gat -1` expires the item after answering; merged into `gat 0 t t` it would not.
        let hit = value_reply("t", 0, b"v");
        let expected = [
            hit.clone(),
            b"END\r\n".to_vec(),
            hit,
            b"END\r\nEND\r\n".to_vec(),
        ]
        .concat();
        c.roundtrip(b"gat 0 t\r\ngat -1 t\r\nget t\r\n", &expected);
    }
}

#[test]
fn a_write_between_gets_keeps_its_place() {
    let (_mc, _proxy, mut c) = setup();
    for i in 0..20 {
        let request = format!(
            "get w\r\nset w 0 0 1\r\n{}\r\nget w\r\ndelete w\r\nget w\r\n",
            i % 10
        );
        let expected = [
            b"END\r\nSTORED\r\n".to_vec(),
            value_reply("w", 0, format!("{}", i % 10).as_bytes()),
            b"END\r\nDELETED\r\nEND\r\n".to_vec(),
        ]
        .concat();
        c.roundtrip(request.as_bytes(), &expected);
    }
}

#[test]
fn long_keys_are_split_over_several_commands() {
    let (mc, _proxy, mut c) = setup();
    let keys: Vec<String> = (0..30)
        .map(|i| format!("{i:03}{}", "k".repeat(247)))
        .collect();
    for k in &keys {
        set(&mut c, k, k.get(..3).unwrap());
    }
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for k in &keys {
        request.extend_from_slice(format!("gat 0 {k}\r\n").as_bytes());
        expected.extend(value_reply(k, 0, k.get(..3).unwrap().as_bytes()));
        expected.extend_from_slice(b"END\r\n");
    }
    c.roundtrip(&request, &expected);
    // memcached closes a connection on 2048 bytes without a newline unless they start with
    // `get `/`gets `; every line memroute sent is within that.
    for line in mc.log().lines().filter(|l| l.contains(" gat ")) {
        assert!(
            line.len() < 2048,
            "a {}-byte line reached memcached",
            line.len()
        );
    }
}

#[test]
fn concurrent_clients_each_get_their_own_values() {
    let (_mc, proxy, mut c) = setup();
    // Keys 0..400 hold their own number; 400..500 are never set.
    for i in 0..400 {
        set(&mut c, &format!("c{i}"), &format!("value-{i}"));
    }
    let port = proxy.port;
    let workers: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(port);
                for n in 0..300 {
                    // A batch of 4 pipelined single-key gets and one 3-key get, with repeats.
                    let ks: Vec<usize> =
                        (0..7).map(|j| (t * 131 + n * 17 + j * 71) % 500).collect();
                    let mut request = Vec::new();
                    let mut expected = Vec::new();
                    let answer = |ks: &[usize], expected: &mut Vec<u8>| {
                        for &k in ks {
                            if k < 400 {
                                expected.extend(value_reply(
                                    &format!("c{k}"),
                                    0,
                                    format!("value-{k}").as_bytes(),
                                ));
                            }
                        }
                        expected.extend_from_slice(b"END\r\n");
                    };
                    for &k in &ks[..4] {
                        request.extend_from_slice(format!("get c{k}\r\n").as_bytes());
                        answer(&[k], &mut expected);
                    }
                    request.extend_from_slice(
                        format!("get c{} c{} c{}\r\n", ks[4], ks[5], ks[4]).as_bytes(),
                    );
                    answer(&[ks[4], ks[5], ks[4]], &mut expected);
                    c.roundtrip(&request, &expected);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}

#[test]
fn merged_commands_are_counted_apart_from_requests() {
    let mc = Memcached::start_with_args(&["-vv"]);
    let proxy = Memroute::builder()
        .admin()
        .pool_with("main", [&mc], "connections = 1")
        .start();
    let mut c = Client::connect(proxy.port);
    roundtrip_until_merged(
        &mc,
        &mut c,
        b"get m1\r\nget m2\r\nget m3\r\n",
        b"END\r\nEND\r\nEND\r\n",
        "get m1 m2 m3",
    );
    let text = proxy.metrics();
    let server = [("server", mc.addr())];
    let server: Vec<(&str, &str)> = server.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let requests = sample(&text, "memroute_backend_requests_total", &server).expect("requests");
    let commands = sample(&text, "memroute_backend_commands_total", &server).expect("commands");
    // Every try sent three requests; at least one try sent them as one command.
    assert_eq!(requests % 3.0, 0.0, "{requests}");
    assert!(
        commands <= requests - 2.0,
        "{commands} commands for {requests} requests"
    );
}

#[test]
fn merge_gets_false_sends_every_get_alone() {
    let (mc, _proxy, mut c) = setup_with("merge_gets = false");
    for _ in 0..20 {
        c.roundtrip(b"get s1\r\nget s2\r\nget s3\r\n", b"END\r\nEND\r\nEND\r\n");
    }
    let log = mc.log();
    assert!(log.contains("get s1"), "memcached saw no get; log:\n{log}");
    assert!(
        !log.contains("get s1 s2"),
        "merged although merge_gets = false"
    );
}

#[test]
fn a_merged_get_that_times_out_fails_every_request_and_its_late_answer_is_dropped_whole() {
    let (mc, _proxy, mut c) = setup_with("timeout = \"300ms\"\nfailure_limit = 1000");
    set(&mut c, "late1", "one");
    set(&mut c, "late2", "two");
    // Until memcached's log shows the three went out merged (each try takes one timeout).
    for attempt in 1.. {
        mc.pause();
        c.roundtrip(
            b"get late1\r\nget late2\r\nget late1\r\n",
            &b"SERVER_ERROR timeout\r\n".repeat(3),
        );
        mc.resume();
        // The late answer is read and dropped whole; what follows on the same shared
        // connection gets its own answers.
        for _ in 0..5 {
            let expected = [
                value_reply("late2", 0, b"two"),
                b"END\r\n".to_vec(),
                value_reply("late1", 0, b"one"),
                b"END\r\n".to_vec(),
            ]
            .concat();
            c.roundtrip(b"get late2\r\nget late1\r\n", &expected);
        }
        if mc.log().contains("get late1 late2 late1") {
            break;
        }
        assert!(attempt < 10, "never merged; log:\n{}", mc.log());
    }
}
