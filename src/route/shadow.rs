//! Shadow traffic: `shadow = { pool = "candidate", fraction = 0.1 }` on a route copies the
//! requests of that share of the route's keys to a candidate pool, to load-test it before a
//! migration.
//!
//! - Keys are chosen by a hash of the whole key, so the same keys are shadowed every time (a
//!   candidate sees complete histories of its keys: the writes and then the reads).
//! - The copy is handed to a bounded queue ([`QUEUE`] jobs per route) at dispatch time, with a
//!   `try_send`: when the queue is full the copy is dropped and counted (`result="dropped"`),
//!   so a slow or stopped candidate never slows the main path. One worker per route sends the
//!   copies with at most [`IN_FLIGHT`] waiting for an answer.
//! - The candidate's answers never reach the client. For reads (`get gets gat gats`, `mg me`)
//!   they are compared with the main reply: `same`, `different` or `error` (the candidate
//!   failed). Retrievals are compared per key on flags and data (CAS tokens differ between
//!   pools by nature; `gets`/`gats` are sent as `get`/`gat`); meta answers byte for byte (so an
//!   `mg … c` asking for the CAS token counts as `different`). A read the main path answered with
//!   an error is not compared. Writes are counted `written` or `error`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use prometheus::IntCounter;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::replicas::key_hash;
use super::{ReplyFuture, Router, group};
use crate::backend::{BackendError, Lane, Pool, Pools};
use crate::config::RouteConfig;
use crate::metrics::Metrics;
use crate::protocol::backend::{Response, pair};
use crate::protocol::command::{Keyed, Op, Retrieval, Retrieve};
use crate::protocol::meta::MetaVerb;
use crate::protocol::reply::Reply;

/// Copies one route may have queued for its candidate.
pub const QUEUE: usize = 1024;
/// Copies one route may have sent and not yet had answered.
pub const IN_FLIGHT: usize = 256;

/// Seed of the selection hash (see [`super::replicas::key_hash`]).
const SEED: u64 = 0x7368_6164_6f77_0001;

/// A route's shadow.
pub struct Shadow {
    /// The candidate pool.
    pub pool: Arc<Pool>,
    /// Share of keys shadowed.
    pub fraction: f64,
    tx: mpsc::Sender<Job>,
    m: Arc<ShadowMetrics>,
}

struct ShadowMetrics {
    same: IntCounter,
    different: IntCounter,
    error: IntCounter,
    written: IntCounter,
    dropped: IntCounter,
}

/// One copy for the candidate; `main` brings the client's reply for a read.
struct Job {
    lane: Lane,
    what: What,
    main: Option<oneshot::Receiver<Reply>>,
}

enum What {
    Keyed(Keyed),
    Get(Retrieve),
}

impl Shadow {
    /// The shadow of a route config (`None` without one, or outside a tokio runtime, where its
    /// worker could not run).
    pub fn new(config: &RouteConfig, pools: &Pools, metrics: &Metrics) -> Option<Shadow> {
        let sc = config.shadow.as_ref()?;
        let pool = pools.get(&sc.pool)?.clone();
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let c = |r| {
            metrics
                .routing
                .shadow_requests
                .with_label_values(&[pool.name(), r])
        };
        let m = Arc::new(ShadowMetrics {
            same: c("same"),
            different: c("different"),
            error: c("error"),
            written: c("written"),
            dropped: c("dropped"),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        // Ends when the route (the last sender) is dropped by a reload.
        runtime.spawn(worker(rx, pool.clone(), m.clone()));
        Some(Shadow {
            pool,
            fraction: sc.fraction,
            tx,
            m,
        })
    }

    /// True when `key`'s requests are copied.
    pub fn selects(&self, key: &[u8]) -> bool {
        let h = key_hash(key, SEED) >> 11; // 53 bits: exact in an f64
        (h as f64) / ((1u64 << 53) as f64) < self.fraction
    }

    /// Queues a copy of a single-key command when its key is selected; for a read, returns
    /// where the main reply is to be sent for the comparison.
    pub fn offer_keyed(&self, lane: Lane, keyed: &Keyed) -> Option<oneshot::Sender<Reply>> {
        if !self.selects(keyed.key()) || matches!(keyed, Keyed::CopyRead { .. }) {
            return None;
        }
        let read =
            matches!(keyed, Keyed::Meta(m) if matches!(m.verb, MetaVerb::Get | MetaVerb::Debug));
        self.queue(lane, What::Keyed(keyed.clone()), read)
    }

    fn queue(&self, lane: Lane, what: What, read: bool) -> Option<oneshot::Sender<Reply>> {
        let (tx, rx) = if read {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let job = Job {
            lane,
            what,
            main: rx,
        };
        if self.tx.try_send(job).is_err() {
            self.m.dropped.inc();
            return None;
        }
        tx
    }
}

/// Queues copies of a retrieval's selected keys (one per shadowed route); returns where the main
/// reply is to be sent.
pub fn offer_retrieve(router: &Router, lane: Lane, get: &Retrieve) -> Vec<oneshot::Sender<Reply>> {
    let mut by_route: Vec<(&Shadow, Vec<Bytes>)> = Vec::new();
    for key in &get.keys {
        let Some(shadow) = router.route(key).and_then(|r| r.shadow.as_ref()) else {
            continue;
        };
        if !shadow.selects(key) {
            continue;
        }
        group::add(&mut by_route, shadow, key.clone(), |a, b| {
            std::ptr::eq(*a, *b)
        });
    }
    // CAS tokens differ between pools: the copy asks without them.
    let kind = match get.kind {
        Retrieval::Gets => Retrieval::Get,
        Retrieval::Gats => Retrieval::Gat,
        k => k,
    };
    by_route
        .into_iter()
        .filter_map(|(s, keys)| {
            let what = What::Get(Retrieve {
                kind,
                exptime: get.exptime,
                keys,
            });
            s.queue(lane, what, true)
        })
        .collect()
}

/// The main reply future, also handing its reply to the shadow comparisons.
pub fn tee(fut: ReplyFuture, to: Vec<oneshot::Sender<Reply>>) -> ReplyFuture {
    if to.is_empty() {
        return fut;
    }
    Box::pin(async move {
        let reply = fut.await;
        for tx in to {
            // A dropped receiver: the comparison was given up (a reload); nothing to do.
            let _ = tx.send(reply.clone());
        }
        reply
    })
}

async fn worker(mut rx: mpsc::Receiver<Job>, pool: Arc<Pool>, m: Arc<ShadowMetrics>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        // While every permit is taken the queue fills up and further copies are dropped.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let pool = pool.clone();
        let m = m.clone();
        tokio::spawn(async move {
            run(job, &pool, &m).await;
            drop(permit);
        });
    }
}

async fn run(job: Job, pool: &Pool, m: &ShadowMetrics) {
    match job.what {
        What::Keyed(keyed) => {
            let answer = super::tiers::call(pool, job.lane, keyed).await;
            let failed = match &answer {
                Err(_) => true,
                Ok(Response::Line(l)) => l.starts_with(b"SERVER_ERROR"),
                Ok(_) => false,
            };
            let Some(main) = job.main else {
                if failed { &m.error } else { &m.written }.inc();
                return;
            };
            let Ok(main) = main.await else { return };
            if main.is_server_error() {
                return;
            }
            match (failed, &main, &answer) {
                (true, _, _) => m.error.inc(),
                (false, Reply::Line(a), Ok(Response::Line(b))) if a == b => m.same.inc(),
                (false, Reply::Static(a), Ok(Response::Line(b))) if *a == &b[..] => m.same.inc(),
                _ => m.different.inc(),
            }
        }
        What::Get(get) => {
            let found = lookup(pool, job.lane, &get).await;
            let Some(main) = job.main else { return };
            let Ok(main) = main.await else { return };
            let Reply::Values(blocks) = main else {
                return; // the main path failed: nothing to compare with
            };
            let main: HashMap<Bytes, (u32, Bytes)> = blocks
                .iter()
                .filter_map(parse_block)
                .map(|(k, f, d)| (k, (f, d)))
                .collect();
            for (key, result) in get.keys.iter().zip(found) {
                match result {
                    Err(()) => m.error.inc(),
                    Ok(candidate) => {
                        if candidate.as_ref() == main.get(key) {
                            m.same.inc();
                        } else {
                            m.different.inc();
                        }
                    }
                }
            }
        }
    }
}

/// Each key's `(flags, data)` in the candidate (`None` for a miss, `Err` when its server failed).
async fn lookup(pool: &Pool, lane: Lane, get: &Retrieve) -> Vec<Result<Option<(u32, Bytes)>, ()>> {
    let keys = &get.keys;
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut results: Vec<Result<Option<(u32, Bytes)>, ()>> = vec![Err(()); keys.len()];
    for (i, key) in keys.iter().enumerate() {
        let Ok(server) = pool.locate_index(key) else {
            continue;
        };
        group::add(&mut groups, server, i, |a, b| a == b);
    }
    let answers = join_all(groups.iter().map(|(s, ks)| {
        let op = Op::Get {
            kind: get.kind,
            exptime: get.exptime,
            keys: ks.iter().filter_map(|&i| keys.get(i).cloned()).collect(),
        };
        async move {
            match pool.servers.get(*s) {
                Some(server) => server.call(lane, op).await,
                None => Err(BackendError::new(
                    crate::backend::ErrorKind::NoServer,
                    crate::backend::Origin::Routing,
                )),
            }
        }
    }))
    .await;
    for ((_, ks), answer) in groups.iter().zip(answers) {
        if let Ok(Response::Values(values)) = answer {
            for (&i, v) in ks.iter().zip(pair(values, ks.len())) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Ok(v.map(|v| (v.flags, v.data())));
                }
            }
        }
    }
    results
}

/// `(key, flags, data)` of a `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n` block.
fn parse_block(block: &Bytes) -> Option<(Bytes, u32, Bytes)> {
    let end = block.windows(2).position(|w| w == b"\r\n")?;
    let mut header = block.get(..end)?.split(|&b| b == b' ');
    if header.next()? != b"VALUE" {
        return None;
    }
    let key = header.next()?;
    let flags = std::str::from_utf8(header.next()?).ok()?.parse().ok()?;
    let key = block.slice_ref(key);
    let data = block.slice(end + 2..block.len().checked_sub(2)?.max(end + 2));
    Some((key, flags, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_read_back_into_key_flags_and_data() {
        let b = Bytes::from_static(b"VALUE k1 5 3 99\r\nabc\r\n");
        let (k, f, d) = parse_block(&b).unwrap();
        assert_eq!((&k[..], f, &d[..]), (&b"k1"[..], 5, &b"abc"[..]));
        let empty = Bytes::from_static(b"VALUE k 0 0\r\n\r\n");
        assert_eq!(&parse_block(&empty).unwrap().2[..], b"");
    }

    #[test]
    fn the_selected_share_is_close_to_the_fraction() {
        let sel = |key: &str, fraction: f64| {
            let h = key_hash(key.as_bytes(), SEED) >> 11;
            (h as f64) / ((1u64 << 53) as f64) < fraction
        };
        let n = (0..20_000).filter(|i| sel(&format!("k{i}"), 0.1)).count();
        assert!((1_800..2_200).contains(&n), "{n}");
        assert!((0..100).all(|i| sel(&format!("k{i}"), 1.0)));
    }
}
