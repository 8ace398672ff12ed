//! `scripts/runbook.sh` runs deploy/README.md's migration runbook end to end against local
//! memcacheds and this build of memroute; it exits 0 only if every step's check passed.

mod common;

use std::process::Command;

use common::run_ok;

/// Runs the script with `env` on top of the test's environment; panics with its output unless
/// it exits 0. The script bounds itself (`RUNBOOK_TIME_LIMIT`) and stops what it started.
fn run_runbook(env: &[(&str, &str)]) {
    let (stdout, _) = run_ok(
        "bash scripts/runbook.sh",
        Command::new("bash")
            .arg("scripts/runbook.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("MEMROUTE", env!("CARGO_BIN_EXE_memroute"))
            .env("RUNBOOK_TIME_LIMIT", "150")
            .envs(env.iter().copied()),
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    eprintln!("{stdout}");
}

/// As an operator runs it: the README's `admin` helper uses curl when it is installed.
#[test]
fn migration_runbook_passes_end_to_end() {
    run_runbook(&[]);
}

/// Without curl: HTTP to the admin port over bash's /dev/tcp.
#[test]
fn migration_runbook_passes_without_curl() {
    run_runbook(&[("RUNBOOK_HTTP", "devtcp")]);
}
