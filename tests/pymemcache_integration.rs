//! pymemcache's own integration tests (`pymemcache/test/test_integration.py` of its 4.0.0
//! source distribution, which scripts/deps.sh fetches from PyPI) run as a real client through
//! memroute in front of three memcacheds, with `flush_all` allowed (every test starts with
//! one). All 100 must pass: `test_misc` exercises `stats cachedump` and `cache_memlimit`,
//! `test_errors` the error replies, the rest every storage and retrieval command with the
//! plain, pooled and hashing clients.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Memcached, Memroute, config_one_pool_with, free_port};

/// Must match `PYMEMCACHE_VERSION` in scripts/deps.sh.
const VERSION: &str = "4.0.0";
/// pymemcache 4.0.0's integration tests, without gevent: 100 run, 3 skipped (`test_tls`).
const EXPECTED_PASSED: u32 = 100;
/// The suite takes about 11 s against memcached; a hang must not hold the test run.
const LIMIT: Duration = Duration::from_secs(300);

/// Where scripts/deps.sh unpacks the sdist.
fn sdist_dir() -> PathBuf {
    let base = std::env::var_os("MEMROUTE_DEPS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("memroute")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/memroute")))
        .expect("HOME is set");
    base.join(format!("pymemcache-{VERSION}"))
}

/// The count before `word` in pytest's summary line, e.g. `100 passed, 3 skipped in 11.13s`.
fn count(summary: &str, word: &str) -> u32 {
    summary
        .split([',', '='])
        .filter_map(|part| {
            let mut it = part.split_whitespace();
            let n: u32 = it.next()?.parse().ok()?;
            (it.next() == Some(word)).then_some(n)
        })
        .sum()
}

#[test]
fn pymemcache_integration_tests_pass_through_memroute() {
    let dir = sdist_dir();
    let suite = dir.join("pymemcache/test/test_integration.py");
    assert!(
        suite.is_file(),
        "{} is missing: run scripts/deps.sh (it fetches pymemcache {VERSION}'s sdist and pytest)",
        suite.display()
    );
    let backends: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let servers: Vec<String> = backends.iter().map(Memcached::addr).collect();
    let proxy = Memroute::start(&config_one_pool_with(
        free_port(),
        &servers,
        "allow_flush_all = true",
        "",
    ));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    // The sdist's own package is imported (cwd first on sys.path), so the tests run against
    // the client code they were written for. `-o addopts=` drops setup.cfg's coverage options
    // (pytest-cov is not needed); `-m integration` is how pymemcache selects these tests.
    let mut child = Command::new(&python)
        .current_dir(&dir)
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-m",
            "integration",
            "-q",
            "-rfE",
            "pymemcache/test/test_integration.py",
            "--server",
            "127.0.0.1",
            "--port",
        ])
        .arg(proxy.port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python} (scripts/deps.sh installs pytest): {e}"));
    let started = Instant::now();
    while child.try_wait().expect("pytest status").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("pytest did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("pytest output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed") || l.contains(" failed") || l.contains(" error"))
        .unwrap_or("");
    let report = format!(
        "pytest exit {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- memroute ---\n{}",
        out.status,
        proxy.stderr()
    );
    assert_eq!(count(summary, "failed"), 0, "{report}");
    assert_eq!(
        count(summary, "error") + count(summary, "errors"),
        0,
        "{report}"
    );
    assert_eq!(count(summary, "passed"), EXPECTED_PASSED, "{report}");
    assert!(out.status.success(), "{report}");
    println!("pymemcache {VERSION} integration tests through memroute: {summary}");
}

#[test]
fn pytest_summary_counts_are_read() {
    assert_eq!(count("100 passed, 3 skipped in 11.13s", "passed"), 100);
    assert_eq!(count("94 passed, 6 failed, 3 skipped in 9s", "failed"), 6);
    assert_eq!(count("=== 1 error in 0.1s ===", "error"), 1);
    assert_eq!(count("100 passed in 1s", "failed"), 0);
}
