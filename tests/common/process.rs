//! Real processes for the tests: memcached backends, ports, signals (memroute itself is in
//! `memroute.rs`, twemproxy in `nutcracker.rs`). Each test starts its own on free loopback ports, so tests run in parallel;
//! every process is killed when its handle drops.

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a process may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Every test memcached: root may run it, no UDP, loopback only, 64 MB, one worker thread.
const MEMCACHED_ARGS: &str = "-u root -U 0 -l 127.0.0.1 -m 64 -t 1";
/// Attempts with fresh ports when a port turns out to be taken between `free_port` and bind.
pub const PORT_ATTEMPTS: usize = 4;

/// Ports handed out by this test binary: `free_port` never returns one twice, so two tests of
/// the same binary cannot race for the port the kernel just released.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago: bind `127.0.0.1:0`, read the port, drop.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no fresh free port after 100 tries");
}

/// A private scratch directory for one process (config, logs); removed on drop of the owner.
pub fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("memroute-test-{}-{what}-{n}", std::process::id()));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Writes `text` to `dir/name`; its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write test file");
    path
}

/// Waits until `127.0.0.1:port` accepts a TCP connection from `child`, and fails early, with
/// the exit status, if the child exits first. Other test runs on this machine pick free ports
/// too, so a port can be taken between `free_port` and bind; and a connect to a local port
/// nobody listens on can connect to itself. So the listener must prove it is `child`: by its
/// `STAT pid` when `require_pid` (memcached), else by still running a moment later.
pub fn wait_until_accepting(port: u16, child: &mut Child, require_pid: bool) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = ([127, 0, 0, 1], port).into();
    let exited = |child: &mut Child| match child.try_wait() {
        Ok(Some(status)) => Err(format!("exited before listening on port {port}: {status}")),
        _ => Ok(()),
    };
    while Instant::now() < deadline {
        exited(child)?;
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            let self_connected = stream.local_addr().ok() == stream.peer_addr().ok();
            match (self_connected, stats_pid(stream)) {
                (true, _) => {}
                (false, Some(pid)) if pid == child.id() => return Ok(()),
                (false, Some(pid)) => {
                    return Err(format!("port {port} is held by pid {pid} (address in use)"));
                }
                (false, None) if !require_pid => {
                    thread::sleep(Duration::from_millis(50));
                    return exited(child);
                }
                (false, None) => {}
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "did not accept on port {port} within {START_TIMEOUT:?}"
    ))
}

/// Waits until `ready(port)` holds for `child`'s server, failing early if `child` exits; and,
/// since the port may be another process's, checks it still runs a moment later.
fn wait_until_ready(port: u16, child: &mut Child, ready: &ReadyCheck) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let exited = |child: &mut Child| match child.try_wait() {
        Ok(Some(status)) => Err(format!("exited before serving on port {port}: {status}")),
        _ => Ok(()),
    };
    while Instant::now() < deadline {
        exited(child)?;
        if ready(port) {
            thread::sleep(Duration::from_millis(50));
            return exited(child);
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not ready on port {port} within {START_TIMEOUT:?}"))
}

/// The `STAT pid` a memcached-like server reports, if it answers `stats` with one (memcached and
/// memroute do; nutcracker does not, and then only the exit check guards the port).
fn stats_pid(mut stream: TcpStream) -> Option<u32> {
    use std::io::{BufRead, BufReader, Write};
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"stats\r\n").ok()?;
    let reader = BufReader::new(stream);
    for line in reader.split(b'\n').take(200) {
        let line = line.ok()?;
        if line.starts_with(b"END") {
            return None;
        }
        if let Some(pid) = line.strip_prefix(b"STAT pid ") {
            return String::from_utf8_lossy(pid).trim().parse().ok();
        }
    }
    None
}

/// `out`'s stdout and stderr as text, asserting it exited 0 (else its status and both streams,
/// under `what`).
#[track_caller]
pub fn assert_success(what: &str, out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Runs `cmd` to completion (`what` names it, and what installs it) and asserts it exits 0:
/// its stdout and stderr.
#[track_caller]
pub fn run_ok(what: &str, cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert_success(what, &out)
}

/// Sends a signal with `kill -SIG pid` (the crate forbids `unsafe`, so no `libc::kill`).
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
}

/// Whether every thread of `pid` is in state `T` (stopped), per `/proc/PID/task/*/stat`.
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name: "PID (comm) S ...".
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

pub fn kill_and_wait(child: &mut Child) {
    // A stopped (SIGSTOP) process still dies on SIGKILL.
    let _ = child.kill();
    let _ = child.wait();
}

pub fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Whether a memcached on a port is up and serving (for one that does not speak plain text,
/// e.g. TLS only).
pub type ReadyCheck = Arc<dyn Fn(u16) -> bool + Send + Sync>;

/// One memcached process on a free loopback port.
pub struct Memcached {
    /// The TCP port it listens on (kept across `restart`).
    pub port: u16,
    child: Child,
    args: Vec<String>,
    /// How it shows it is up: `None`, its `STAT pid` over plain text.
    ready: Option<ReadyCheck>,
    dir: PathBuf,
}

impl Memcached {
    /// `memcached -u root -U 0 -l 127.0.0.1 -p PORT -m 64 -t 1`, ready to accept.
    pub fn start() -> Memcached {
        Memcached::start_with_args(&[])
    }

    /// As [`Memcached::start`] with extra arguments (e.g. `["-I", "2m"]`).
    pub fn start_with_args(args: &[&str]) -> Memcached {
        Memcached::start_checked(args, None)
    }

    /// As [`Memcached::start_with_args`], up once `ready(port)` holds (and it still runs a
    /// moment later) instead of once it reports its pid over plain text.
    pub fn start_checked(args: &[&str], ready: Option<ReadyCheck>) -> Memcached {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let dir = scratch_dir("memcached");
        let mut errors = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            match Memcached::spawn(port, &args, ready.as_ref(), &dir) {
                Ok(child) => {
                    return Memcached {
                        port,
                        child,
                        args,
                        ready,
                        dir,
                    };
                }
                Err(e) => errors.push(e),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("memcached did not start: {errors:#?}");
    }

    fn spawn(
        port: u16,
        args: &[String],
        ready: Option<&ReadyCheck>,
        dir: &Path,
    ) -> Result<Child, String> {
        let log = dir.join("stderr.log");
        let mut child = Command::new("memcached")
            .args(MEMCACHED_ARGS.split(' '))
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot run memcached (scripts/deps.sh installs it): {e}"))?;
        let up = match ready {
            None => wait_until_accepting(port, &mut child, true),
            Some(ready) => wait_until_ready(port, &mut child, ready),
        };
        match up {
            Ok(()) => Ok(child),
            Err(e) => {
                kill_and_wait(&mut child);
                Err(format!("memcached {e}; stderr: {}", read_log(&log)))
            }
        }
    }

    /// What memcached wrote to stderr so far (with `-vv`, every command it received).
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        read_log(&self.dir.join("stderr.log"))
    }

    /// `127.0.0.1:PORT`, as written in a pool's `servers`.
    pub fn addr(&self) -> String {
        self.to_string()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap. Connections to it are reset, new ones are refused.
    pub fn stop(&mut self) {
        kill_and_wait(&mut self.child);
    }

    /// Stops it (if running) and starts a fresh, empty memcached on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port was just ours; retry briefly in case the kernel has not released it yet.
        for _ in 0..20 {
            match Memcached::spawn(self.port, &self.args, self.ready.as_ref(), &self.dir) {
                Ok(child) => {
                    self.child = child;
                    return;
                }
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("memcached did not restart on port {}: {last}", self.port);
    }

    /// SIGSTOP: it keeps its connections but answers nothing (a hung server). Returns once
    /// every thread is stopped; the signal alone is asynchronous.
    pub fn pause(&self) {
        send_signal(self.pid(), "STOP");
        let deadline = Instant::now() + START_TIMEOUT;
        while !all_threads_stopped(self.pid()) {
            assert!(
                Instant::now() < deadline,
                "memcached {} did not stop",
                self.pid()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT after [`Memcached::pause`].
    pub fn resume(&self) {
        send_signal(self.pid(), "CONT");
    }
}

/// Prints as its address, so a list of them can be a pool's `servers`.
impl std::fmt::Display for Memcached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.0.0.1:{}", self.port)
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// Where it lived before `memroute.rs`; tests may still name it here.
pub use super::memroute::Memroute;
