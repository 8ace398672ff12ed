//! libmemcached's `memcapable -a` (Debian: `memccapable`) passes through memroute every ASCII
//! test it passes against memcached directly.

mod common;

use std::process::Command;

use common::{Memcached, Memroute};

/// The `[pass]`/`[FAIL]` lines of one memcapable run.
fn memcapable(port: u16) -> Vec<String> {
    let out = Command::new("memccapable")
        .args(["-a", "-t", "5", "-h", "127.0.0.1", "-p", &port.to_string()])
        .output()
        .expect("memccapable (Debian libmemcached-tools; scripts/deps.sh installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter(|l| l.contains("[pass]") || l.contains("[FAIL]"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn memcapable_ascii_passes_through_memroute_as_directly() {
    let direct = Memcached::start();
    let direct_results = memcapable(direct.port);
    assert!(
        direct_results.len() >= 20,
        "memcapable ran: {direct_results:?}"
    );

    let backend = Memcached::start();
    let proxy = Memroute::builder()
        .listen("allow_flush_all = true")
        .pool("main", [&backend])
        .start();
    let proxied = memcapable(proxy.port);
    for line in &direct_results {
        if line.ends_with("[pass]") {
            assert!(
                proxied.contains(line),
                "passes directly but not through memroute: {line}\nall: {proxied:#?}"
            );
        }
    }
}
