//! The per-server replay queue: deletes a lower tier could not take (marked down, timeout,
//! connection error) are kept here and sent again once the server is back.
//!
//! The queue is per process and bounded ([`MAX_PER_SERVER`] keys per server; more are counted as
//! `overflow` and left to the tombstone). While a key waits here, this process treats the
//! server as not holding it, so a read that reaches the server the moment it is back cannot
//! serve the value the delete was meant to remove. Other processes rely on the tombstone in
//! tier 0 (see [`super::tombstone`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use prometheus::IntCounter;

use crate::backend::{Lane, Server};
use crate::metrics::Metrics;
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Op};

/// Keys kept per server; a longer outage overflows into the tombstones alone.
pub const MAX_PER_SERVER: usize = 10_000;
/// How often the queue looks for servers that are back.
const INTERVAL: Duration = Duration::from_millis(200);
/// Deletes sent to one server per round.
const BATCH: usize = 256;

/// Failed lower-tier deletes, by server address.
pub struct Replay {
    queues: Mutex<HashMap<String, Queue>>,
    /// Keys queued in all queues: lets [`Replay::pending`] skip the lock when nothing waits.
    len: AtomicUsize,
    running: AtomicBool,
    counts: Counts,
}

struct Queue {
    /// The server the deletes are for; the queue goes when the server is dropped (left the
    /// config and no snapshot uses it any more).
    server: Weak<Server>,
    keys: VecDeque<Bytes>,
    /// Every key waiting, also those taken out for a round in progress.
    members: HashSet<Bytes>,
}

struct Counts {
    queued: IntCounter,
    replayed: IntCounter,
    retried: IntCounter,
    overflow: IntCounter,
    dropped: IntCounter,
}

impl Replay {
    /// An empty queue counting into `metrics`.
    pub fn new(metrics: &Metrics) -> Replay {
        let c = |result| metrics.tiers.replays.with_label_values(&[result]);
        Replay {
            queues: Mutex::default(),
            len: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            counts: Counts {
                queued: c("queued"),
                replayed: c("replayed"),
                retried: c("retried"),
                overflow: c("overflow"),
                dropped: c("dropped"),
            },
        }
    }

    /// Queues a delete of `key` on `server` (once per key) and starts the replay task if it is
    /// not running. Must run inside the tokio runtime.
    pub fn push(self: &Arc<Self>, server: &Arc<Server>, key: &Bytes) {
        {
            let mut queues = lock(&self.queues);
            let q = queues
                .entry(server.address().to_string())
                .or_insert_with(|| Queue {
                    server: Arc::downgrade(server),
                    keys: VecDeque::new(),
                    members: HashSet::new(),
                });
            // The newest server object of this address (a reload may have replaced it).
            q.server = Arc::downgrade(server);
            if q.members.contains(key) {
                return;
            }
            if q.members.len() >= MAX_PER_SERVER {
                self.counts.overflow.inc();
                return;
            }
            q.members.insert(key.clone());
            q.keys.push_back(key.clone());
            self.len.fetch_add(1, Ordering::Relaxed);
            self.counts.queued.inc();
        }
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(self.clone()));
        }
    }

    /// True while a delete of `key` on the server at `address` waits here: the server must be
    /// treated as not holding it.
    pub fn pending(&self, address: &str, key: &[u8]) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        lock(&self.queues)
            .get(address)
            .is_some_and(|q| q.members.contains(key))
    }

    /// Keys waiting, over all servers.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes one round's work: up to [`BATCH`] keys of each server that is not marked down.
    /// Queues of dropped servers are discarded (counted).
    fn take_round(&self) -> Vec<(Arc<Server>, Vec<Bytes>)> {
        let mut queues = lock(&self.queues);
        let mut work = Vec::new();
        queues.retain(|_, q| match q.server.upgrade() {
            None => {
                let n = q.members.len();
                self.counts.dropped.inc_by(n as u64);
                self.len.fetch_sub(n, Ordering::Relaxed);
                false
            }
            Some(server) => {
                if !server.health.is_down() && !q.keys.is_empty() {
                    let n = q.keys.len().min(BATCH);
                    work.push((server, q.keys.drain(..n).collect()));
                }
                !q.members.is_empty()
            }
        });
        work
    }

    /// Puts back what a round could not delete, and forgets what it did.
    fn finish_round(&self, address: &str, done: &[Bytes], failed: Vec<Bytes>) {
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(address) else {
            return;
        };
        for key in done {
            if q.members.remove(key) {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.counts.replayed.inc_by(done.len() as u64);
        self.counts.retried.inc_by(failed.len() as u64);
        for key in failed.into_iter().rev() {
            q.keys.push_front(key);
        }
        if q.members.is_empty() {
            queues.remove(address);
        }
    }
}

/// The replay task: a round every [`INTERVAL`] until every queue is empty.
async fn run(replay: Arc<Replay>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        for (server, keys) in replay.take_round() {
            let answers = join_all(keys.iter().map(|key| {
                server.call(
                    Lane::default(),
                    Op::Keyed(Keyed::Delete { key: key.clone() }),
                )
            }))
            .await;
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for (key, answer) in keys.into_iter().zip(answers) {
                match answer {
                    // Deleted, or not there (any more): either way the server no longer holds
                    // the value the delete was for.
                    Ok(Response::Line(l))
                        if &l[..] == b"DELETED\r\n" || &l[..] == b"NOT_FOUND\r\n" =>
                    {
                        done.push(key)
                    }
                    _ => failed.push(key),
                }
            }
            replay.finish_round(server.address(), &done, failed);
        }
        if replay.is_empty() {
            replay.running.store(false, Ordering::Release);
            // A push between the check and the store saw `running` still true and did not
            // start a task: take over its work.
            if replay.is_empty() || replay.running.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }
}

/// A poisoned map is still a valid map.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
