//! Helpers for the operations tests (`shutdown.rs`, `cli.rs`): memroute spawned directly, so a
//! test can read its exit status (the shared harness reaps it without keeping the status), and a
//! tiny HTTP/1.1 client for the admin port. Uses `tests/common` for memcached and free ports.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::process::{free_port, kill_and_wait, read_log, scratch_dir, send_signal};

/// Polling step of every "wait until" loop below.
pub const POLL_STEP: Duration = Duration::from_millis(20);

/// memroute run by the test itself, with its config in a private directory and stderr captured.
pub struct Proc {
    /// The client port.
    pub port: u16,
    /// The admin HTTP port.
    pub admin_port: u16,
    child: Child,
    dir: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Writes `config(port, admin_port)` for two free ports, runs
    /// `memroute --config FILE ARGS…` and waits until both ports accept. Retries with fresh
    /// ports if one was taken meanwhile.
    pub fn start(config: impl Fn(u16, u16) -> String, args: &[&str]) -> Proc {
        let dir = scratch_dir("ops");
        let path = dir.join("memroute.toml");
        let mut last = String::new();
        for _ in 0..4 {
            let (port, admin_port) = (free_port(), free_port());
            fs::write(&path, config(port, admin_port)).expect("write config");
            let mut child = Command::new(env!("CARGO_BIN_EXE_memroute"))
                .arg("--config")
                .arg(&path)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(dir.join("stderr.log")).expect("stderr log"))
                .spawn()
                .expect("spawn memroute");
            let up = crate::common::process::wait_until_accepting(port, &mut child, true)
                .and_then(|()| wait_port(admin_port, &mut child));
            match up {
                Ok(()) => {
                    return Proc {
                        port,
                        admin_port,
                        child,
                        dir,
                        status: None,
                    };
                }
                Err(e) => {
                    kill_and_wait(&mut child);
                    last = format!("{e}\n--- stderr ---\n{}", read_log(&dir.join("stderr.log")));
                }
            }
        }
        panic!("memroute did not start: {last}");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIG pid`.
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        read_log(&self.dir.join("stderr.log"))
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits (polling, at most `limit`) for the process to exit; its status, or `None` if it
    /// still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_STEP);
        }
    }

    /// The directory with its config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        if thread::panicking() {
            eprintln!("--- memroute stderr ---\n{}", self.stderr());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `port` accepts, failing early if `child` exits.
fn wait_port(port: u16, child: &mut Child) -> Result<(), String> {
    for _ in 0..500 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited: {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(POLL_STEP);
    }
    Err(format!("admin port {port} never accepted"))
}

/// `GET path` on `127.0.0.1:port`: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Config with one pool `main` of `servers`, the default route to it, and an admin port.
/// `pool_extra` goes into `[pools.main]` (e.g. `timeout = "60s"`).
pub fn config(port: u16, admin_port: u16, servers: &[String], pool_extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\n\n\
         [admin]\naddress = \"127.0.0.1:{admin_port}\"\n\n\
         [pools.main]\nservers = [{}]\n{pool_extra}\n\n\
         [[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n",
        servers.join(", ")
    )
}
