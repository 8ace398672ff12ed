//! The processes of a run (memcached, nutcracker, memroute, workers) and what `/proc` says about
//! them. Every process is started by this program and stopped by its PID when its [`Proc`] is
//! dropped (also on panic), so a run leaves nothing behind.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed (by PID) and reaped on drop.
pub struct Proc {
    /// Label for messages.
    pub name: String,
    /// Its PID (`taskset` and `sh` exec into the program, so this is the program's PID).
    pub pid: u32,
    child: Child,
}

impl Proc {
    /// Starts `argv` with its output in `log`, on CPU list `cpus` if given, with the open-file
    /// limit raised to the hard limit (10,000 client connections need it).
    pub fn spawn(name: &str, argv: &[String], cpus: Option<&str>, log: &Path) -> Proc {
        let log_file = std::fs::File::create(log).expect("log file");
        let child = command(argv, cpus)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", argv[0]));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child,
        }
    }

    /// Starts `argv` with piped stdin and stdout (the worker).
    pub fn spawn_piped(name: &str, argv: &[String], cpus: Option<&str>) -> Proc {
        let child = command(argv, cpus)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child,
        }
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits up to `limit` for the process to exit, killing it after that; returns its stdout.
    pub fn finish(mut self, limit: Duration) -> Result<String, String> {
        drop(self.child.stdin.take());
        let mut stdout = self.child.stdout.take();
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let mut out = String::new();
                    if let Some(s) = stdout.as_mut() {
                        let _ = s.read_to_string(&mut out);
                    }
                    return if status.success() {
                        Ok(out)
                    } else {
                        Err(format!("{} exited with {status}", self.name))
                    };
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    return Err(format!(
                        "{} did not finish within {limit:?}; killed",
                        self.name
                    ));
                }
            }
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn command(argv: &[String], cpus: Option<&str>) -> Command {
    // `ulimit -n` up to the hard limit, then exec (keeps the PID), through taskset if pinned.
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@""#)
        .arg("sh");
    if let Some(cpus) = cpus {
        c.args(["taskset", "-c", cpus]);
    }
    c.args(argv);
    c
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits until `port` accepts connections (and the process is still alive).
pub fn wait_listening(p: &mut Proc, port: u16, log: &Path) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !p.alive() {
            break;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{} is not listening on {port}; its log:\n{log}", p.name);
}

/// User + system CPU ticks of these processes (all their threads), summed.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which is in parentheses and may contain spaces:
            // state is field 3, utime 14 and stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    fields.join(" ")
}

/// Resident set size in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Output of a command, trimmed ("?" if it fails).
pub fn output(argv: &[&str], dir: Option<&Path>) -> String {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..]).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    match c.output() {
        Ok(o) if o.status.success() => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            if s.trim().is_empty() {
                s = String::from_utf8_lossy(&o.stderr).into_owned();
            }
            s.trim().to_string()
        }
        _ => "?".into(),
    }
}

/// A fresh scratch directory for configs and logs.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memroute-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
