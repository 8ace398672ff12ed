//! Issue 12, the client edge under abuse: each test starts real memcacheds and memroute on
//! loopback, abuses memroute as a hostile or broken client would, and checks that other clients
//! keep their service and that memroute's memory and descriptors stay bounded.
//!
//! Load numbers are compared with a baseline measured in the same test run (ratios), never with
//! absolute wall-clock figures. The tests take turns ([`serial`]): each measures load and must
//! not be disturbed by the others.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Memcached, Memroute, free_port};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// memroute's default `[listen] max_client_output` (src/config.rs).
const MAX_CLIENT_OUTPUT: u64 = 4 * MIB;

/// One abuse test at a time: they measure throughput and memory.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS") * KIB
}

fn config(port: u16, servers: &[&Memcached], listen_extra: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|m| format!("\"{}\"", m.addr()))
        .collect();
    format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\n{listen_extra}\n\n\
         [pools.main]\nservers = [{}]\n\n[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n",
        servers.join(", ")
    )
}

/// Samples `pid`'s RSS every 20 ms for `how_long`; the largest value.
fn peak_rss_for(pid: u32, how_long: Duration) -> u64 {
    let end = Instant::now() + how_long;
    let mut peak = rss(pid);
    while Instant::now() < end {
        peak = peak.max(rss(pid));
        thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn a_client_that_never_reads_1024_large_values_costs_at_most_its_byte_cap() {
    let _turn = serial();
    let mc = Memcached::start();
    let memroute = Memroute::start(&config(free_port(), &[&mc], ""));
    let pid = memroute.pid();
    const VALUE: usize = 500 * 1000;
    let value: Vec<u8> = (0..VALUE).map(|i| b'a' + (i % 26) as u8).collect();
    let mut setter = Client::connect(memroute.port);
    setter.set("bigvalue", &value);
    let reply = common::value_reply("bigvalue", 0, &value);
    let mut answer = reply.clone();
    answer.extend_from_slice(b"END\r\n");
    // Warm: one client reads a few large answers, so buffers that stay anyway are counted idle.
    for _ in 0..3 {
        setter.roundtrip(b"get bigvalue\r\n", &answer);
    }
    thread::sleep(Duration::from_millis(300));
    let idle = rss(pid);

    let mut hog = TcpStream::connect(("127.0.0.1", memroute.port)).expect("connect");
    hog.write_all(&b"get bigvalue\r\n".repeat(1024))
        .expect("send 1024 gets");
    // memroute answers until the byte cap; then it must stop asking.
    let peak = peak_rss_for(pid, Duration::from_secs(2));
    let grown = peak.saturating_sub(idle);
    eprintln!(
        "non-reader: RSS idle {} KiB, peak {} KiB, +{} KiB (cap {} KiB)",
        idle / KIB,
        peak / KIB,
        grown / KIB,
        MAX_CLIENT_OUTPUT / KIB
    );
    assert!(
        grown <= MAX_CLIENT_OUTPUT + 6 * MIB,
        "RSS grew by {} KiB for one client that does not read (cap {} KiB + 6 MiB)",
        grown / KIB,
        MAX_CLIENT_OUTPUT / KIB
    );
    // Meanwhile other clients are served as usual.
    let mut other = Client::connect(memroute.port);
    for _ in 0..20 {
        other.roundtrip(b"get bigvalue\r\n", &answer);
    }
    // Once the hog reads, every answer arrives, whole and in order.
    hog.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; answer.len()];
    for i in 0..1024 {
        hog.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("answer {i}: {e}"));
        assert!(buf == answer, "answer {i} differs");
    }
    let mut probe = [0u8; 1];
    hog.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        matches!(hog.read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut),
        "nothing beyond the 1024 answers"
    );
}
