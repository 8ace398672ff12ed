//! twemproxy (Debian's nutcracker 0.5) is the reference for placement: keys written through it
//! must all be found through memroute over the same backends (DESIGN §2).

mod common;

use common::{Client, Memcached, Memroute, Nutcracker, free_port, nutcracker_config};

const KEYS: usize = 5_000;

fn check(hash: &str, weighted: bool) {
    let backends: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let servers: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if weighted {
                format!("{}:{} server{}", b.addr(), i + 1, i + 1)
            } else {
                format!("{}:1", b.addr())
            }
        })
        .collect();
    let nutcracker = Nutcracker::start(&nutcracker_config(free_port(), &servers, hash, "ketama"));
    let proxy = Memroute::builder()
        .pool_with("main", &servers, &format!("hash = \"{hash}\""))
        .start();

    // Write through nutcracker, pipelined in batches.
    let mut nc = Client::connect(nutcracker.port);
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let mut req = Vec::new();
        for i in batch {
            req.extend_from_slice(
                format!("set nk:{i} 0 0 {}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes(),
            );
        }
        nc.send(&req);
        for _ in batch {
            assert_eq!(nc.read_line(), b"STORED\r\n");
        }
    }
    // Every backend got a share.
    for b in &backends {
        let items = Client::connect(b.port).stat("curr_items");
        assert!(items > 0, "a backend got no keys");
    }
    // Read every key through memroute.
    let mut c = Client::connect(proxy.port);
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let names: Vec<String> = batch.iter().map(|i| format!("nk:{i}")).collect();
        c.send(format!("get {}\r\n", names.join(" ")).as_bytes());
        let mut expected = Vec::new();
        for i in batch {
            let v = format!("v{i}");
            expected.extend_from_slice(format!("VALUE nk:{i} 0 {}\r\n{v}\r\n", v.len()).as_bytes());
        }
        expected.extend_from_slice(b"END\r\n");
        c.expect(&expected);
    }
}

#[test]
fn keys_written_through_nutcracker_are_found_through_memroute_fnv1a_64() {
    check("fnv1a_64", false);
}

#[test]
fn keys_written_through_nutcracker_are_found_through_memroute_md5() {
    check("md5", false);
}

#[test]
fn keys_written_through_nutcracker_are_found_through_memroute_weighted_named_fnv1a_64() {
    check("fnv1a_64", true);
}

#[test]
fn keys_written_through_nutcracker_are_found_through_memroute_weighted_named_md5() {
    check("md5", true);
}
