//! Helpers for the replica, gutter and shadow tests (`tests/replicas.rs`, `tests/gutter.rs`,
//! `tests/shadow.rs`): memroute over pools of real memcacheds with route tables the shared
//! [`crate::common::Builder`] does not write (a route with `replicas` has no `tiers`), and
//! direct, byte-exact looks at one backend.
//!
//! Built on the shared harness in `tests/common` (which this file does not change).

// Each test binary uses only part of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crate::common::{Client, Memcached, Memroute, counter, free_port, memroute::quoted, poll};

/// Starts memroute with an admin port, the pools `(name, servers, extra lines)` and `routes`
/// (raw `[[routes]]` TOML).
pub fn start(pools: &[(&str, &[&Memcached], &str)], routes: &str) -> Memroute {
    let text = |port: u16, admin: Option<u16>| {
        let mut t = format!("[listen]\naddress = \"127.0.0.1:{port}\"\n\n");
        if let Some(a) = admin {
            t.push_str(&format!("[admin]\naddress = \"127.0.0.1:{a}\"\n\n"));
        }
        for (name, servers, extra) in pools {
            let list: Vec<String> = servers.iter().map(|m| quoted(&m.addr())).collect();
            t.push_str(&format!(
                "[pools.{name}]\nservers = [{}]\n{extra}\n\n",
                list.join(", ")
            ));
        }
        t.push_str(routes);
        t
    };
    Memroute::launch(text, || (free_port(), Some(free_port())), &[])
}

/// One request straight to a backend, its whole answer read up to `end` (a line ending the
/// answer, e.g. `"END\r\n"`; empty: the answer is one line).
pub fn direct(m: &Memcached, request: &str, end: &[u8]) -> Vec<u8> {
    let mut c = Client::connect(m.port);
    c.send(request.as_bytes());
    let mut out = Vec::new();
    loop {
        let line = c.read_line();
        let done = end.is_empty()
            || line == end
            || line.starts_with(b"SERVER_ERROR")
            || line.starts_with(b"ERROR");
        out.extend(line);
        if done {
            return out;
        }
    }
}

/// `get <key>` straight to a backend.
pub fn direct_get(m: &Memcached, key: &str) -> Vec<u8> {
    direct(m, &format!("get {key}\r\n"), b"END\r\n")
}

/// `set <key> 0 0 <len>` straight to a backend.
pub fn direct_set(m: &Memcached, key: &str, value: &str) {
    let mut c = Client::connect(m.port);
    let set = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    c.roundtrip(set.as_bytes(), b"STORED\r\n");
}

/// The bytes of a one-item `get` answer, `END` included.
pub fn hit(key: &str, value: &str) -> Vec<u8> {
    format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len()).into_bytes()
}

/// `get <key>` through `c`, the whole answer.
pub fn get(c: &mut Client, key: &str) -> Vec<u8> {
    c.send(format!("get {key}\r\n").as_bytes());
    let first = c.read_line();
    if !first.starts_with(b"VALUE") {
        return first;
    }
    let mut all = first;
    all.extend(c.read_line());
    all.extend(c.read_line());
    all
}

/// Polls until memroute's `/metrics` says `server` is up (`want` 1.0) or marked down (0.0).
pub fn wait_health(m: &Memroute, server: &Memcached, want: f64) {
    poll("server health", || {
        let v = counter(
            &m.metrics(),
            "memroute_server_up",
            &[("server", &server.addr())],
        );
        (v == want).then_some(())
    })
}

/// A load thread: `step(client, i)` for i = 0, 1, … on its own connection, until
/// [`Load::stop`] (at most 200,000 steps, far more than a test gets to), collecting the
/// failures each step returns.
pub struct Load<T> {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<T>>,
}

impl<T: Send + 'static> Load<T> {
    /// Starts the load on a new connection to `m`.
    pub fn start(
        m: &Memroute,
        mut step: impl FnMut(&mut Client, usize) -> Vec<T> + Send + 'static,
    ) -> Load<T> {
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut c = m.client();
        let thread = {
            let (stop, done) = (stop.clone(), done.clone());
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Acquire) && i < 200_000 {
                    failures.extend(step(&mut c, i));
                    i += 1;
                    done.store(i, Ordering::Release);
                }
                failures
            })
        };
        Load { stop, done, thread }
    }

    /// How many steps are done.
    pub fn steps(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }

    /// Waits until `n` more steps than now are done; the steps done then.
    pub fn at_least(&self, n: usize) -> usize {
        let base = self.steps();
        poll("load progress", || (self.steps() >= base + n).then_some(()));
        self.steps()
    }

    /// Stops the load: the failures, and how many steps it made.
    pub fn stop(self) -> (Vec<T>, usize) {
        self.stop.store(true, Ordering::Release);
        let failures = self.thread.join().expect("load thread");
        (failures, self.done.load(Ordering::Acquire))
    }
}
