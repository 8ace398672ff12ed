//! Helpers for `tests/admin.rs`: a memroute process with an admin port on free loopback ports
//! and a memcached text exchange; memcached, polling and HTTP come from `tests/common`.
//!
//! Every process is killed when its handle is dropped, so a failing test leaves nothing behind.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long any single socket operation may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::common::{Memcached, free_port, poll};

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
