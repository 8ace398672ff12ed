//! The command line: `--version`, `-h` describing every flag, `--log-format json`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{Memcached, Memroute};

fn memroute(args: &[&str]) -> Output {
    common::memroute::command()
        .args(args)
        .output()
        .expect("run memroute")
}

#[test]
fn version_prints_the_version() {
    for flag in ["--version", "-V"] {
        let out = memroute(&[flag]);
        assert!(out.status.success(), "{flag}: {}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            concat!("memroute ", env!("CARGO_PKG_VERSION"), "\n"),
            "{flag}"
        );
    }
}

/// The option lines of a clap help text: (the flag spec, its description).
fn options(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .map(|l| {
            let l = l.trim();
            match l.split_once("  ") {
                Some((flag, text)) => (flag.to_string(), text.trim().to_string()),
                None => (l.to_string(), String::new()),
            }
        })
        .collect()
}

#[test]
fn help_describes_every_flag() {
    let out = memroute(&["-h"]);
    assert!(out.status.success(), "{}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    let listed = options(&help);
    for (flag, text) in &listed {
        assert!(text.len() > 10, "{flag} has no description in -h:\n{help}");
    }
    for flag in [
        "--config <FILE>",
        "--check-config <FILE>",
        "--log-format <FORMAT>",
        "--log-level <FILTER>",
        "--threads <N>",
        "--drain-timeout <DURATION>",
        "--help",
        "--version",
    ] {
        assert!(
            listed.iter().any(|(spec, _)| spec.contains(flag)),
            "{flag} missing from -h:\n{help}"
        );
    }
    assert!(help.contains("import-nutcracker"), "{help}");
    assert!(help.contains("[possible values: text, json]"), "{help}");

    let out = memroute(&["import-nutcracker", "-h"]);
    assert!(out.status.success(), "{}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    let listed = options(&help);
    assert!(
        listed
            .iter()
            .any(|(spec, text)| spec.contains("--pool") && text.len() > 10),
        "{help}"
    );
}

#[test]
fn missing_config_is_a_usage_error() {
    let out = memroute(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", out.status);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config <FILE>"));
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let backend = Memcached::start();
    let mut memroute = Memroute::builder()
        .admin()
        .pool("main", [&backend])
        .args(&["--log-format", "json"])
        .start();
    memroute.signal("TERM");
    let status = memroute
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    let log = memroute.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    let mut messages = Vec::new();
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "memroute listening"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("shutting down")),
        "{messages:?}"
    );
}

#[test]
fn log_format_text_is_the_default_without_colours_off_a_terminal() {
    let backend = Memcached::start();
    let mut memroute = Memroute::builder().admin().pool("main", [&backend]).start();
    memroute.signal("TERM");
    memroute
        .wait_exit(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    let log = memroute.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("memroute listening"))
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        serde_json::from_str::<serde_json::Value>(line).is_err(),
        "{line}"
    );
    // stderr is a file here, not a terminal: no colour escapes.
    assert!(!log.contains('\x1b'), "ANSI escapes in a log file:\n{log}");
}
