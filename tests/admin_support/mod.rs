//! Helpers for `tests/admin.rs`: real memcached and memroute processes on free loopback ports,
//! a memcached text client and a tiny HTTP/1.1 client, all over `std::net`.
//!
//! Every process is killed when its handle is dropped, so a failing test leaves nothing behind.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long any single socket operation may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Polling step and bound for "wait until" loops (bounded attempts, never a timing assertion).
pub const POLL_STEP: Duration = Duration::from_millis(50);
/// Attempts of a polling loop: 200 × 50 ms = 10 s at most.
pub const POLL_ATTEMPTS: usize = 200;

/// A loopback port nobody listens on right now (bind port 0, read it, close).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Calls `f` every [`POLL_STEP`] until it returns `Some`, at most [`POLL_ATTEMPTS`] times.
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..POLL_ATTEMPTS {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(POLL_STEP);
    }
    panic!("gave up waiting for {what}");
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    poll(what, || TcpStream::connect(("127.0.0.1", port)).ok());
}

/// A memcached process on a loopback port.
pub struct Memcached {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

impl Memcached {
    /// Starts memcached on a free port.
    pub fn start() -> Memcached {
        Memcached::start_on(free_port())
    }

    /// Starts memcached on `port` and waits until it accepts connections.
    pub fn start_on(port: u16) -> Memcached {
        let child = Command::new("memcached")
            .args([
                "-u",
                "root",
                "-U",
                "0",
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached (is it installed?)");
        let m = Memcached {
            port,
            child: Some(child),
        };
        wait_listening(port, &format!("memcached on port {port}"));
        m
    }

    /// `127.0.0.1:PORT`, as written in the config.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process and waits for it, so its port is free again.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The memroute binary running on a config file.
pub struct Memroute {
    /// The memcached (client) port.
    pub port: u16,
    /// The admin HTTP port.
    pub admin_port: u16,
    child: Child,
    dir: PathBuf,
}

impl Memroute {
    /// Writes a config with `[listen]` and `[admin]` on free ports followed by `rest` (pools
    /// and routes), starts memroute on it and waits until `/healthz` answers.
    pub fn start(rest: &str) -> Memroute {
        static N: AtomicUsize = AtomicUsize::new(0);
        let (port, admin_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "memroute-admin-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let config = dir.join("memroute.toml");
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\n\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n\n{rest}"
        );
        std::fs::write(&config, text).expect("write config");
        let log = std::fs::File::create(dir.join("memroute.log")).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_memroute"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start memroute");
        let mut m = Memroute {
            port,
            admin_port,
            child,
            dir,
        };
        poll("memroute's /healthz", || {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("memroute exited with {status}:\n{}", m.log());
            }
            TcpStream::connect(("127.0.0.1", admin_port)).ok()
        });
        m
    }

    /// What memroute logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("memroute.log")).unwrap_or_default()
    }

    /// Sends raw memcached protocol through memroute and returns every reply byte.
    pub fn send(&self, request: &str) -> String {
        exchange(self.port, request)
    }

    /// `GET path` on the admin server.
    pub fn get(&self, path: &str) -> HttpReply {
        http(self.admin_port, "GET", path)
    }

    /// The current `/metrics` text.
    pub fn metrics(&self) -> String {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics: {}", reply.body);
        reply.body
    }
}

impl Drop for Memroute {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `request` on a new connection, half-closes it and reads until the server closes:
/// memcached and memroute both answer everything they read before closing.
pub fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.write_all(request.as_bytes()).expect("write request");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read replies");
    out
}

pub use crate::common::http::{HttpReply, http, sample};
