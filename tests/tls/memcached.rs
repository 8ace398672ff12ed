//! memcached with TLS (`-Z`) on a free loopback port, killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::client::{ClientTls, TlsClient};
use crate::common::process::{free_port, kill_and_wait, read_log, scratch_dir};

/// One `memcached -Z` process.
pub struct TlsMemcached {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl TlsMemcached {
    /// Serves TLS only, with `cert`/`key`; ready once a client trusting `ready_check` (and
    /// checking `name`) gets `VERSION`. With `ready_check = None` (its certificate is not to be
    /// trusted), ready once it accepts TCP and stays up.
    pub fn start(cert: &Path, key: &Path, ready_check: Option<&ClientTls>) -> TlsMemcached {
        TlsMemcached::start_with(cert, key, "", ready_check)
    }

    /// As [`TlsMemcached::start`], with more `-o` settings (`extra`, comma first), e.g.
    /// `",ssl_verify_mode=2,ssl_ca_cert=ca.pem"` to require client certificates.
    pub fn start_with(
        cert: &Path,
        key: &Path,
        extra: &str,
        ready_check: Option<&ClientTls>,
    ) -> TlsMemcached {
        let dir = scratch_dir("memcached-tls");
        let log = dir.join("stderr.log");
        let mut last = String::new();
        for _ in 0..4 {
            let port = free_port();
            let mut child = Command::new("memcached")
                .args([
                    "-u",
                    "root",
                    "-U",
                    "0",
                    "-l",
                    "127.0.0.1",
                    "-m",
                    "64",
                    "-t",
                    "1",
                    "-Z",
                ])
                .arg("-p")
                .arg(port.to_string())
                .arg("-o")
                .arg(format!(
                    "ssl_chain_cert={},ssl_key={}{extra}",
                    cert.display(),
                    key.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("memcached log"))
                .spawn()
                .expect("run memcached (scripts/deps.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            let ready = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("exited: {status}; stderr: {}", read_log(&log));
                    break false;
                }
                let up = match ready_check {
                    Some(tls) => TlsClient::connect(port, tls)
                        .ok()
                        .and_then(|mut c| {
                            c.send(b"version\r\n");
                            let line = c.read_line();
                            line.starts_with(b"VERSION ").then_some(())
                        })
                        .is_some(),
                    None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                };
                if up {
                    thread::sleep(Duration::from_millis(20));
                    break matches!(child.try_wait(), Ok(None));
                }
                if Instant::now() > deadline {
                    last = format!("not ready within 10 s; stderr: {}", read_log(&log));
                    break false;
                }
                thread::sleep(Duration::from_millis(20));
            };
            if ready {
                return TlsMemcached { port, child, dir };
            }
            kill_and_wait(&mut child);
        }
        panic!("memcached -Z did not start: {last}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsMemcached {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
