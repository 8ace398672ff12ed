//! SIGHUP asks for a reload. In its own test binary: the signal goes to the whole process, and
//! would give the file-watching tests in the library an unexpected trigger.

use std::time::Duration;

use memroute::watch::{Trigger, spawn_watcher};

#[tokio::test]
async fn sighup_triggers_a_reload_at_once() {
    let dir = std::env::temp_dir().join(format!("memroute-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, "[pools.a]\nservers = [\"127.0.0.1:11211\"]\n").unwrap();
    // A long debounce: the trigger must not wait for it.
    let mut triggers = spawn_watcher(&path, Duration::from_secs(60)).unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -HUP {}", std::process::id())])
        .status()
        .unwrap();
    assert!(status.success());
    let trigger = tokio::time::timeout(Duration::from_secs(5), triggers.recv()).await;
    assert_eq!(
        trigger.expect("no trigger after SIGHUP"),
        Some(Trigger::Signal)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
