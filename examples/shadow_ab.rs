//! A/B of the main path's latency with shadow traffic (issue 17, acceptance 3): one memroute
//! whose route shadows 10 % of keys to a candidate pool, measured with the candidate running (A)
//! and SIGSTOPped (B), alternating rounds; and a memroute without a shadow as the reference.
//! Load: `CONNS` closed-loop connections, get:set 9:1, 10,000 keys, 100-byte values, every reply
//! checked. The candidate pool has `timeout = "5s"` and a failure limit it never reaches, so a
//! stopped candidate keeps the shadow queue full (the worst case: copies pile up and are
//! dropped, nothing is ever marked down).
//!
//! ```sh
//! cargo build --release --bin memroute --example shadow_ab
//! target/release/examples/shadow_ab target/release/memroute 5 3   # seconds per run, rounds
//! ```
//! Not a test: nothing here asserts a number (the load generator shares the machine). Starts
//! its own memcacheds and memroutes on free loopback ports and kills them (by PID) at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CONNS: usize = 8;
const KEYS: u32 = 10_000;
const VALUE: usize = 100;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("port {port} never accepted");
}

fn memcached(port: u16) -> Child {
    let mut cmd = Command::new("memcached");
    cmd.args(["-U", "0", "-l", "127.0.0.1", "-m", "64", "-t", "1", "-p"])
        .arg(port.to_string());
    if std::env::var("USER").as_deref() == Ok("root") || unsafe_is_root() {
        cmd.args(["-u", "root"]);
    }
    let child = cmd.stdout(Stdio::null()).spawn().expect("run memcached");
    wait_port(port);
    child
}

/// `id -u` is 0 (memcached refuses to run as root without `-u root`).
fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

fn memroute(bin: &str, port: u16, main: u16, candidate: u16, shadow: bool, dir: &str) -> Child {
    let route_shadow = if shadow {
        "shadow = { pool = \"candidate\", fraction = 0.1 }\n"
    } else {
        ""
    };
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\n\n[pools.main]\nservers = [\"127.0.0.1:{main}\"]\n\n\
         [pools.candidate]\nservers = [\"127.0.0.1:{candidate}\"]\ntimeout = \"5s\"\nfailure_limit = 1000000000\n\n\
         [[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n{route_shadow}"
    );
    let path = format!("{dir}/memroute-{port}.toml");
    std::fs::write(&path, text).expect("write config");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run memroute");
    wait_port(port);
    child
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Requests done, errors, and each request's latency in microseconds.
struct Run {
    done: u64,
    errors: u64,
    lat: Vec<u32>,
}

fn fill(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    let value = "v".repeat(VALUE);
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    for k in 0..KEYS {
        // One write per request: several small ones would wait on Nagle's algorithm.
        let req = format!("set key:{k} 0 0 {VALUE}\r\n{value}\r\n");
        s.write_all(req.as_bytes()).expect("write");
        line.clear();
        r.read_line(&mut line).expect("read");
        assert_eq!(line, "STORED\r\n");
    }
}

fn load(port: u16, seconds: f64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CONNS)
        .map(|w| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_nodelay(true).ok();
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let value = "v".repeat(VALUE);
                let hit = format!("VALUE key:{{}} 0 {VALUE}\r\n");
                let mut run = Run {
                    done: 0,
                    errors: 0,
                    lat: Vec::with_capacity(1 << 20),
                };
                let mut x: u32 = 0x9e37_79b9 ^ (w as u32 + 1);
                let mut line = String::new();
                let mut data = vec![0u8; VALUE + 2];
                while !stop.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let k = x % KEYS;
                    let t = Instant::now();
                    let ok = if x % 10 == 0 {
                        let req = format!("set key:{k} 0 0 {VALUE}\r\n{value}\r\n");
                        s.write_all(req.as_bytes()).expect("write");
                        line.clear();
                        r.read_line(&mut line).expect("read");
                        line == "STORED\r\n"
                    } else {
                        s.write_all(format!("get key:{k}\r\n").as_bytes())
                            .expect("write");
                        line.clear();
                        r.read_line(&mut line).expect("read");
                        let good = line == hit.replace("{}", &k.to_string());
                        if good {
                            r.read_exact(&mut data).expect("read");
                            line.clear();
                            r.read_line(&mut line).expect("read");
                        }
                        good && line == "END\r\n"
                    };
                    run.lat.push(t.elapsed().as_micros() as u32);
                    run.done += 1;
                    run.errors += u64::from(!ok);
                }
                run
            })
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Run {
        done: 0,
        errors: 0,
        lat: Vec::new(),
    };
    for w in workers {
        let r = w.join().expect("worker");
        all.done += r.done;
        all.errors += r.errors;
        all.lat.extend(r.lat);
    }
    all
}

/// CPU seconds (user + system) a process used so far, from `/proc/PID/stat`.
fn cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Runs the load on `port` and reports it with the CPU time per request of `pids`.
fn measured(name: &str, port: u16, seconds: f64, pids: &[u32]) -> u32 {
    let before: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect();
    let run = load(port, seconds);
    let done = run.done.max(1) as f64;
    let used: Vec<String> = pids
        .iter()
        .zip(before)
        .map(|(&p, b)| format!("{:.1}", (cpu(p) - b) / done * 1e6))
        .collect();
    let (_, p99) = report(name, run, seconds);
    println!(
        "{:<28} cpu us/request (memroute, main memcached, candidate): {}",
        "",
        used.join(", ")
    );
    p99
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn report(name: &str, mut r: Run, seconds: f64) -> (f64, u32) {
    r.lat.sort_unstable();
    let rps = r.done as f64 / seconds;
    let p99 = pct(&r.lat, 0.99);
    println!(
        "{name:<28} {rps:>9.0} req/s  p50 {:>5} us  p99 {:>5} us  p99.9 {:>6} us  errors {}",
        pct(&r.lat, 0.5),
        p99,
        pct(&r.lat, 0.999),
        r.errors
    );
    (rps, p99)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .cloned()
        .unwrap_or("target/release/memroute".into());
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rounds: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("shadow-ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let dir = dir.display().to_string();
    let (mp, cp) = (free_port(), free_port());
    let mut main_mc = memcached(mp);
    let mut cand_mc = memcached(cp);
    let (plain_port, shadow_port) = (free_port(), free_port());
    let mut plain = memroute(&bin, plain_port, mp, cp, false, &dir);
    let mut shadowed = memroute(&bin, shadow_port, mp, cp, true, &dir);
    fill(plain_port);
    fill(shadow_port); // the shadowed 10 % of keys now exist in the candidate too
    println!(
        "{CONNS} connections, get:set 9:1, {KEYS} keys, {VALUE}-byte values, {seconds}s per run"
    );
    let mut p99s: [Vec<u32>; 3] = Default::default();
    for round in 1..=rounds {
        let (m, c) = (main_mc.id(), cand_mc.id());
        // One measured run of this round: its p99 goes to column `col`.
        let mut run = |col: usize, what: &str, port: u16, pids: &[u32]| {
            p99s[col].push(measured(&format!("r{round} {what}"), port, seconds, pids));
        };
        run(0, "no shadow", plain_port, &[plain.id(), m, c]);
        let pids = [shadowed.id(), m, c];
        run(1, "shadow, candidate up", shadow_port, &pids);
        signal(cand_mc.id(), "STOP");
        run(2, "shadow, candidate STOP", shadow_port, &pids);
        signal(cand_mc.id(), "CONT");
        // Let the candidate drain the copies that waited on it before the next round.
        thread::sleep(Duration::from_secs(1));
    }
    for (name, v) in ["no shadow", "candidate up", "candidate STOP"]
        .iter()
        .zip(&mut p99s)
    {
        v.sort_unstable();
        println!("median p99 {name:<15} {} us", v[v.len() / 2]);
    }
    for c in [&mut plain, &mut shadowed, &mut main_mc, &mut cand_mc] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
