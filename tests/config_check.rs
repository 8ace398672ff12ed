//! `memroute --check-config` and start-up validation (DESIGN §5): every mistake of a file is
//! reported at once as `file:line:col: message`, and a bad file never runs.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::memroute::{check_config, check_config_ok, command};
use common::poll_for;
use common::process::{scratch_dir, write_file as write};

/// Five different mistakes, one per line marked below.
const FIVE_MISTAKES: &str = r#"[listen]
address = "127.0.0.1:11311"
max_conections = 100

[pools.main]
servers = ["127.0.0.1:11211:0", "127.0.0.1:11212"]
timeout = "2 fortnights"

[pools.old]
servers = ["127.0.0.1:11221 cache", "127.0.0.1:11222 cache"]

[[routes]]
prefix = ""
tiers = ["mian", "old"]
"#;

/// `(line, column, words the message must contain)` of each mistake, in file order.
const EXPECTED: [(usize, usize, &[&str]); 5] = [
    // The key, with the right one suggested.
    (3, 1, &["unknown key `max_conections`", "max_connections"]),
    // The server string.
    (6, 12, &["weight", "127.0.0.1:11211:0"]),
    // The duration value.
    (7, 11, &["timeout", "2 fortnights"]),
    // The second of the two servers named `cache` (the first is at line 10 too).
    (10, 37, &["duplicate server name `cache`", "line 10"]),
    // The misspelt pool, with the right one suggested.
    (14, 10, &["no pool named `mian`", "main"]),
];

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts `lines` are exactly the five expected messages for `file`.
#[track_caller]
fn assert_five_messages(file: &Path, lines: &[String]) {
    assert_eq!(
        lines.len(),
        EXPECTED.len(),
        "one line per mistake, got:\n{}",
        lines.join("\n")
    );
    for (line, (l, c, words)) in lines.iter().zip(EXPECTED) {
        let prefix = format!("{}:{l}:{c}: ", file.display());
        assert!(
            line.starts_with(&prefix),
            "expected {prefix:?}…, got {line:?}"
        );
        for w in words {
            assert!(line.contains(w), "{line:?} should mention {w:?}");
        }
    }
}

#[test]
fn check_config_reports_five_mistakes_with_their_positions_and_exits_1() {
    let dir = scratch_dir("check");
    let file = write(&dir, "bad.toml", FIVE_MISTAKES);
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    assert_five_messages(&file, &stderr_lines(&out));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_example_config_passes_check_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    assert!(check_config_ok(&example).contains("ok"));
}

#[test]
fn check_config_of_a_missing_file_exits_1_naming_it() {
    let dir = scratch_dir("check-missing");
    let file = dir.join("absent.toml");
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("cannot read"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn starting_with_a_bad_file_exits_non_zero_with_the_same_messages() {
    let dir = scratch_dir("start-bad");
    let file = write(&dir, "bad.toml", FIVE_MISTAKES);
    let mut child = command()
        .arg("--config")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit by itself; bounded, and killed if it does not.
    if poll_for(Duration::from_secs(10), || child.try_wait().unwrap()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("memroute kept running with an invalid config");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    // Log lines (if any) are not config messages; the messages themselves are the same.
    let lines: Vec<String> = stderr_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with(&file.display().to_string()))
        .collect();
    assert_five_messages(&file, &lines);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_error_of_a_file_with_many_is_reported_in_file_order() {
    // Beyond the five: one mistake of each kind DESIGN §5 names, plus types and ranges.
    let text = r#"colour = "blue"
[listen]
address = "localhost"

[pools.a]
servers = ["127.0.0.1:1", { address = "127.0.0.1:2", weight = 0 }, "127.0.0.1:1"]
retry_timeout = 10
eject = "yes"

[[routes]]
prefix = "x:"
tiers = []
"#;
    let dir = scratch_dir("check-many");
    let file = write(&dir, "many.toml", text);
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    let positions: Vec<String> = lines
        .iter()
        .map(|l| {
            let rest = l.strip_prefix(&format!("{}:", file.display())).unwrap();
            let mut parts = rest.splitn(3, ':');
            format!("{}:{}", parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(
        positions,
        [
            "1:1",  // unknown top-level key
            "3:11", // address without a port
            "6:63", // weight 0
            "6:68", // the same server twice
            "7:17", // duration as a number
            "8:9",  // boolean as a string
            "10:1", // no default route (at the [[routes]] array)
            "12:9", // empty tiers
        ],
        "{}",
        lines.join("\n")
    );
    assert!(
        lines[3].contains("`127.0.0.1:1` is listed twice"),
        "an unnamed server written twice is reported as such: {}",
        lines[3]
    );
    let _ = std::fs::remove_dir_all(dir);
}
