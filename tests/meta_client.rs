//! A real meta-protocol client from PyPI, RevenueCat's `meta-memcache` (installed by
//! scripts/deps.sh), runs get/set/cas/delete/counter/stale-while-revalidate, a base64 key and a
//! multi-get through memroute (tests/meta_client.py holds the operations and their expected
//! results). With `MEMROUTE_TEST_TARGET=direct` the same script runs against memcached.

mod common;

use std::process::Command;

use common::{Target, run_ok};

#[test]
fn meta_memcache_client_works_through_memroute() {
    let t = Target::new(3);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/meta_client.py");
    let (stdout, stderr) = run_ok(
        "meta_client.py (scripts/deps.sh installs meta-memcache)",
        Command::new("python3").args([script, "127.0.0.1", &t.port().to_string(), "mc"]),
    );
    assert_eq!(stdout.trim(), "ok 36", "{stderr}");
}
