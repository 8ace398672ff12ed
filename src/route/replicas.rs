//! Replicated pools: `replicas = ["east", "west"]` on a route. Every replica pool holds every
//! key of the route.
//!
//! - **Writes** (`set add replace append prepend delete incr decr touch`, `ms md ma`) are queued
//!   on every replica at dispatch time, so each replica sees a client's writes in the order it
//!   sent them. The client's reply is the **first replica's** (in `replicas` order) unless it
//!   failed (an error, `SERVER_ERROR …`), then the next one's; a replica that answered
//!   differently (`incr` counters that drifted, `NOT_STORED` on one side) is counted in
//!   `memroute_replica_disagreements_total{pool}`. `write_mode = "sync"` (default) answers once
//!   every replica answered; `"async"` answers after the first healthy one and leaves the rest
//!   in the background, bounded by [`ASYNC_BACKLOG`] writes per route (beyond it a replica's
//!   write is not sent at all, and counted as `dropped`).
//! - **Reads** go to one replica **per key**: the key's *home* replica is chosen by a hash of the
//!   key, the others follow in `replicas` order. Per key and not per client, so that every
//!   client reads a key from the same replica (one replica's hit rate and CAS tokens per key,
//!   and `gets`/`cas` from different connections agree) and a multi-key `get` spreads over all
//!   replicas. On an error (down, timeout, connection) the read fails over to the next replica;
//!   with `read_miss_failover = true` a miss does too (for a replica that is warming up).
//! - **CAS is per replica**, as in mcrouter: `gets` answers the home replica's token and `cas`
//!   (and `ms`/`md`/`ma` with a `C` token) is checked on the home replica only (failing over like
//!   a read). When it succeeds, the new value goes to the other replicas as a plain `set` (the
//!   meta line without its `C` token), so they follow the checked write. Such a request is a
//!   barrier in its client's pipeline, so the client's next write cannot overtake that `set`.
//!
//! `gat`/`gats` read like `get` and then `touch` the key on the other replicas, so the TTL
//! stays the same everywhere. A read that fails over asks the next replica after the first
//! answered, so a write the same client pipelined behind it may already have reached that
//! replica (reads are not barriers: the common case, no failover, keeps the pipeline).
//!
//! Known limits: `mg` with `T`/`N` touches only the replica that answered; a multi-key
//! retrieval that mixes keys of a route with fallback tiers and of a replicated route reads the
//! replicated keys from their first replica only (the tiered reader handles the whole request).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::gutter::{self, Gutter};
use super::{ReplyFuture, Route, Router, ready, to_reply};
use crate::backend::server::Pending;
use crate::backend::{BackendError, ErrorKind, Lane, Origin, Pool, Pools, Server};
use crate::config::{RouteConfig, WriteMode};
use crate::metrics::Metrics;
use crate::protocol::backend::{Response, Value, pair};
use crate::protocol::command::{Keyed, Op, Retrieval, Retrieve, Storage};
use crate::protocol::meta::MetaVerb;
use crate::protocol::reply::{NO_ROUTE, Reply};

/// Background writes (async mode, CAS follow-ups) one route may have waiting for an answer.
pub const ASYNC_BACKLOG: usize = 4096;

/// Seed of the home-replica hash (the shadow selection uses another, so the two choices are
/// independent).
const HOME_SEED: u64 = 0x7265_706c_6963_6173;

/// The replicas of one route.
pub struct Replicas {
    /// In `replicas` order.
    pub targets: Vec<Target>,
    /// When writes answer.
    pub write_mode: WriteMode,
    /// A miss also fails over.
    pub read_miss_failover: bool,
    backlog: Arc<Semaphore>,
}

/// One replica pool.
pub struct Target {
    /// The pool.
    pub pool: Arc<Pool>,
    /// Its gutter, when it has `failover`.
    pub gutter: Option<Gutter>,
    m: TargetMetrics,
}

struct TargetMetrics {
    write_ok: IntCounter,
    write_error: IntCounter,
    write_dropped: IntCounter,
    read_hit: IntCounter,
    read_miss: IntCounter,
    read_error: IntCounter,
    failover_error: IntCounter,
    failover_miss: IntCounter,
    disagreements: IntCounter,
}

impl Replicas {
    /// The replicas of a route config, `None` for a route without `replicas`.
    pub fn new(config: &RouteConfig, pools: &Pools, metrics: &Metrics) -> Option<Replicas> {
        if config.replicas.is_empty() {
            return None;
        }
        let targets = config
            .replicas
            .iter()
            .map(|name| {
                let pool = pools.get(name)?.clone();
                let p = pool.name();
                let w = |r| metrics.routing.replica_writes.with_label_values(&[p, r]);
                let r = |r| metrics.routing.replica_reads.with_label_values(&[p, r]);
                let f = |r| metrics.routing.replica_failovers.with_label_values(&[p, r]);
                let m = TargetMetrics {
                    write_ok: w("ok"),
                    write_error: w("error"),
                    write_dropped: w("dropped"),
                    read_hit: r("hit"),
                    read_miss: r("miss"),
                    read_error: r("error"),
                    failover_error: f("error"),
                    failover_miss: f("miss"),
                    disagreements: metrics
                        .routing
                        .replica_disagreements
                        .with_label_values(&[p]),
                };
                Some(Target {
                    gutter: Gutter::of(&pool, pools, metrics),
                    pool,
                    m,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Replicas {
            targets,
            write_mode: config.write_mode,
            read_miss_failover: config.read_miss_failover,
            backlog: Arc::new(Semaphore::new(ASYNC_BACKLOG)),
        })
    }

    /// Index of the key's home replica.
    pub fn home(&self, key: &[u8]) -> usize {
        (key_hash(key, HOME_SEED) % self.targets.len().max(1) as u64) as usize
    }

    /// Replica indices in the order a read of `key` tries them: home first.
    pub fn order(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let n = self.targets.len();
        let home = self.home(key);
        (0..n).map(move |i| (home + i) % n)
    }
}

/// A 64-bit hash of the whole key (FNV-1a, then splitmix64's finalizer so every bit depends on
/// every byte), independent of any pool's ring hash.
pub fn key_hash(key: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

type Answer = Result<Response, BackendError>;

/// True when the replica did not answer the request (an error of its own, not the client's).
fn failed(answer: &Answer) -> bool {
    match answer {
        Err(_) => true,
        Ok(Response::Line(l)) => l.starts_with(b"SERVER_ERROR"),
        Ok(_) => false,
    }
}

async fn wait(pending: Result<Pending, BackendError>) -> Answer {
    match pending {
        Ok(p) => p.wait().await,
        Err(e) => Err(e),
    }
}

fn closed() -> BackendError {
    BackendError::new(ErrorKind::NoServer, Origin::Routing)
}

/// A single-key command on a replicated route. The flag is the barrier flag of
/// [`super::dispatch`].
pub fn dispatch(r: &Arc<Replicas>, lane: Lane, keyed: Keyed) -> (ReplyFuture, bool) {
    match &keyed {
        Keyed::Store {
            kind: Storage::Cas, ..
        } => (checked(r.clone(), lane, keyed), true),
        Keyed::Store { .. } | Keyed::Delete { .. } | Keyed::Arith { .. } | Keyed::Touch { .. } => {
            (write(r, lane, keyed), false)
        }
        Keyed::Meta(m) => match m.verb {
            MetaVerb::Set | MetaVerb::Delete | MetaVerb::Arith if m.has(b'C') => {
                (checked(r.clone(), lane, keyed), true)
            }
            MetaVerb::Set | MetaVerb::Delete | MetaVerb::Arith => (write(r, lane, keyed), false),
            MetaVerb::Get | MetaVerb::Debug => (read(r.clone(), lane, keyed), false),
        },
        Keyed::CopyRead { .. } => (read(r.clone(), lane, keyed), false),
    }
}

/// Counts one replica's answer to a write against the reply the client got.
fn record_write(t: &Target, answer: &Answer, chosen: Option<&Bytes>) {
    if failed(answer) {
        t.m.write_error.inc();
        return;
    }
    t.m.write_ok.inc();
    let line = match answer {
        Ok(Response::Line(l)) => Some(l),
        _ => None,
    };
    if let (Some(line), Some(chosen)) = (line, chosen) {
        if line != chosen {
            t.m.disagreements.inc();
        }
    }
}

fn line_of(answer: &Answer) -> Option<Bytes> {
    match answer {
        Ok(Response::Line(l)) => Some(l.clone()),
        _ => None,
    }
}

/// Sends `keyed` to every replica (async mode: the replicas after the first only while the
/// backlog has room).
/// Sends `keyed` to every replica but `skip` and, as `write_mode` says, waits for their answers
/// (sync) or leaves them to the background (async); each answer is counted.
async fn send_to_others(r: &Arc<Replicas>, lane: Lane, keyed: &Keyed, skip: Option<usize>) {
    let sent = send_all(r, lane, keyed, skip);
    match r.write_mode {
        WriteMode::Sync => {
            for (j, p, _) in sent {
                let a = wait(p).await;
                if let Some(t) = r.targets.get(j) {
                    record_write(t, &a, None);
                }
            }
        }
        WriteMode::Async => background(r.clone(), sent, None),
    }
}

fn send_all(
    r: &Replicas,
    lane: Lane,
    keyed: &Keyed,
    skip: Option<usize>,
) -> Vec<(
    usize,
    Result<Pending, BackendError>,
    Option<OwnedSemaphorePermit>,
)> {
    let mut sent = Vec::with_capacity(r.targets.len());
    for (i, t) in r.targets.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let background = r.write_mode == WriteMode::Async && (i > 0 || skip.is_some());
        let permit = if background {
            match r.backlog.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    t.m.write_dropped.inc();
                    continue;
                }
            }
        } else {
            None
        };
        let pending = gutter::send(&t.pool, t.gutter.as_ref(), lane, keyed.clone());
        sent.push((i, pending, permit));
    }
    sent
}

/// A write to every replica.
fn write(r: &Arc<Replicas>, lane: Lane, keyed: Keyed) -> ReplyFuture {
    let sent = send_all(r, lane, &keyed, None);
    let r = r.clone();
    Box::pin(async move {
        match r.write_mode {
            WriteMode::Sync => {
                let mut answers = Vec::with_capacity(sent.len());
                for (i, p, _) in sent {
                    answers.push((i, wait(p).await));
                }
                let chosen = answers.iter().position(|(_, a)| !failed(a)).unwrap_or(0);
                let line = answers.get(chosen).and_then(|(_, a)| line_of(a));
                for (i, a) in &answers {
                    if let Some(t) = r.targets.get(*i) {
                        record_write(t, a, line.as_ref());
                    }
                }
                let answer = answers.into_iter().nth(chosen).map(|(_, a)| a);
                to_reply(answer.unwrap_or_else(|| Err(closed())))
            }
            WriteMode::Async => {
                let mut sent = sent.into_iter();
                let mut first_error = None;
                while let Some((i, p, _permit)) = sent.next() {
                    let answer = wait(p).await;
                    let Some(t) = r.targets.get(i) else { continue };
                    if failed(&answer) {
                        t.m.write_error.inc();
                        first_error.get_or_insert(answer);
                        continue;
                    }
                    t.m.write_ok.inc();
                    background(r.clone(), sent.collect(), line_of(&answer));
                    return to_reply(answer);
                }
                to_reply(first_error.unwrap_or_else(|| Err(closed())))
            }
        }
    })
}

/// Waits for the other replicas' answers off the client's path, holding their backlog permits.
fn background(
    r: Arc<Replicas>,
    rest: Vec<(
        usize,
        Result<Pending, BackendError>,
        Option<OwnedSemaphorePermit>,
    )>,
    chosen: Option<Bytes>,
) {
    if rest.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for (i, p, permit) in rest {
            let answer = wait(p).await;
            if let Some(t) = r.targets.get(i) {
                record_write(t, &answer, chosen.as_ref());
            }
            drop(permit);
        }
    });
}

/// `cas` and meta writes with a `C` token: checked on the home replica (failing over like a
/// read), then, when it succeeded, written to the others without the check.
fn checked(r: Arc<Replicas>, lane: Lane, keyed: Keyed) -> ReplyFuture {
    let order: Vec<usize> = r.order(keyed.key()).collect();
    Box::pin(async move {
        let mut first_error = None;
        for (step, &i) in order.iter().enumerate() {
            let Some(t) = r.targets.get(i) else { continue };
            let answer = wait(gutter::send(
                &t.pool,
                t.gutter.as_ref(),
                lane,
                keyed.clone(),
            ))
            .await;
            if failed(&answer) {
                t.m.write_error.inc();
                if step + 1 < order.len() {
                    t.m.failover_error.inc();
                }
                first_error.get_or_insert(answer);
                continue;
            }
            t.m.write_ok.inc();
            if let Some(follow) = succeeded(&answer).then(|| unchecked(&keyed)).flatten() {
                send_to_others(&r, lane, &follow, Some(i)).await;
            }
            return to_reply(answer);
        }
        to_reply(first_error.unwrap_or_else(|| Err(closed())))
    })
}

fn succeeded(answer: &Answer) -> bool {
    match answer {
        Ok(Response::Line(l)) => {
            &l[..] == b"STORED\r\n" || l.starts_with(b"HD") || l.starts_with(b"VA")
        }
        _ => false,
    }
}

/// The write the other replicas get after a checked one succeeded: `set` for `cas`, the meta
/// line without its `C` token.
fn unchecked(keyed: &Keyed) -> Option<Keyed> {
    match keyed {
        Keyed::Store {
            kind: Storage::Cas,
            key,
            flags,
            exptime,
            data,
            ..
        } => Some(Keyed::Store {
            kind: Storage::Set,
            key: key.clone(),
            flags: *flags,
            exptime: *exptime,
            data: data.clone(),
            cas: 0,
        }),
        Keyed::Meta(m) => {
            let first_flag = if m.verb == MetaVerb::Set { 3 } else { 2 };
            let mut line = BytesMut::with_capacity(m.line.len());
            for (i, token) in m
                .line
                .split(|&b| b == b' ')
                .filter(|t| !t.is_empty())
                .enumerate()
            {
                if i >= first_flag && token.first() == Some(&b'C') {
                    continue;
                }
                if !line.is_empty() {
                    line.put_u8(b' ');
                }
                line.put_slice(token);
            }
            let mut m = m.clone();
            m.line = line.freeze();
            m.flags &= !(1u64 << (b'C' - b'A'));
            Some(Keyed::Meta(m))
        }
        _ => None,
    }
}

/// True for a miss of a single-key read (`EN` for `mg`, `EN` for `me` too).
fn is_miss(answer: &Answer) -> bool {
    match answer {
        Ok(Response::Line(l)) => {
            l.starts_with(b"EN") && matches!(l.get(2), Some(b' ' | b'\r') | None)
        }
        Ok(Response::Values(v)) => v.is_empty(),
        _ => false,
    }
}

/// A single-key read (`mg`, `me`): home replica first, failing over on an error (and on a miss
/// with `read_miss_failover`). The first attempt is queued at dispatch time.
fn read(r: Arc<Replicas>, lane: Lane, keyed: Keyed) -> ReplyFuture {
    let order: Vec<usize> = r.order(keyed.key()).collect();
    let first = order
        .first()
        .and_then(|&i| r.targets.get(i))
        .map(|t| gutter::send(&t.pool, t.gutter.as_ref(), lane, keyed.clone()));
    Box::pin(async move {
        let mut first = first;
        let mut first_error = None;
        let mut last_miss = None;
        for (step, &i) in order.iter().enumerate() {
            let Some(t) = r.targets.get(i) else { continue };
            let pending = match first.take() {
                Some(p) => p,
                None => gutter::send(&t.pool, t.gutter.as_ref(), lane, keyed.clone()),
            };
            let answer = wait(pending).await;
            let more = step + 1 < order.len();
            if failed(&answer) {
                t.m.read_error.inc();
                if more {
                    t.m.failover_error.inc();
                }
                first_error.get_or_insert(answer);
                continue;
            }
            if is_miss(&answer) {
                t.m.read_miss.inc();
                if r.read_miss_failover && more {
                    t.m.failover_miss.inc();
                    last_miss = Some(answer);
                    continue;
                }
                return to_reply(answer);
            }
            t.m.read_hit.inc();
            return to_reply(answer);
        }
        to_reply(last_miss.or(first_error).unwrap_or_else(|| Err(closed())))
    })
}

/// What one key's lookup came to so far.
enum Slot {
    Todo,
    /// Found, in the round given (which names the replica through the key's plan).
    Hit(Value, usize),
    Miss,
    Error(Reply),
}

/// Where each key of a retrieval is looked up: its route, and the replicas in the order tried
/// (`None` for a key on a route without replicas: its owner pool only).
struct Plan {
    route: Arc<Route>,
    order: Vec<usize>,
}

impl Plan {
    fn tries(&self) -> usize {
        self.order.len().max(1)
    }
}

/// One server's share of one round.
struct Group {
    server: Arc<Server>,
    gutter: bool,
    keys: Vec<usize>,
    pending: Result<Pending, BackendError>,
}

/// A retrieval where some key is on a replicated route (and none on a tiered one): round `n`
/// asks each key's `n`-th replica, one request per server; keys that failed (or missed, with
/// `read_miss_failover`) go on to the next round. Round 0 is queued at dispatch time.
pub fn retrieve(router: &Router, lane: Lane, get: Retrieve) -> ReplyFuture {
    let plans: Option<Vec<Plan>> = get
        .keys
        .iter()
        .map(|k| {
            let route = router.route(k)?.clone();
            let order = route
                .replicas
                .as_ref()
                .map_or_else(Vec::new, |r| r.order(k).collect());
            Some(Plan { route, order })
        })
        .collect();
    let Some(plans) = plans else {
        return ready(Reply::Static(NO_ROUTE));
    };
    let mut slots: Vec<Slot> = get.keys.iter().map(|_| Slot::Todo).collect();
    let all: Vec<usize> = (0..get.keys.len()).collect();
    let round0 = send_round(&plans, &get, &all, 0, lane, &mut slots);
    Box::pin(async move {
        let mut groups = round0;
        let rounds = plans.iter().map(Plan::tries).max().unwrap_or(1);
        for round in 0..rounds {
            if round > 0 {
                let todo: Vec<usize> = (0..get.keys.len())
                    .filter(|&i| matches!(slots[i], Slot::Todo))
                    .collect();
                if todo.is_empty() {
                    break;
                }
                groups = send_round(&plans, &get, &todo, round, lane, &mut slots);
            }
            for g in groups.drain(..) {
                let answer = wait(g.pending).await;
                settle(&plans, &mut slots, &g.keys, answer, round);
            }
        }
        if matches!(get.kind, Retrieval::Gat | Retrieval::Gats) {
            touch_others(&plans, &get.keys, &slots, lane, get.exptime).await;
        }
        let mut first_error = None;
        let mut blocks = Vec::new();
        let mut errors = 0;
        for slot in slots {
            match slot {
                Slot::Hit(v, _) => blocks.push(v.block),
                Slot::Error(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                Slot::Miss | Slot::Todo => {}
            }
        }
        if errors == get.keys.len() {
            if let Some(e) = first_error {
                return e;
            }
        }
        Reply::Values(blocks)
    })
}

/// A `gat` changed the TTL of its hits on the replica that answered: the other replicas of each
/// such key get the same `touch` (awaited in sync mode, in the background in async mode).
async fn touch_others(plans: &[Plan], keys: &[Bytes], slots: &[Slot], lane: Lane, exptime: i32) {
    for ((plan, key), slot) in plans.iter().zip(keys).zip(slots) {
        let (Slot::Hit(_, round), Some(r)) = (slot, &plan.route.replicas) else {
            continue;
        };
        let touch = Keyed::Touch {
            key: key.clone(),
            exptime,
        };
        send_to_others(r, lane, &touch, plan.order.get(*round).copied()).await;
    }
}

/// Sends round `round` for the keys in `todo`, grouped by server. A key whose server cannot be
/// picked is settled as an error at once (and tried again next round).
fn send_round(
    plans: &[Plan],
    get: &Retrieve,
    todo: &[usize],
    round: usize,
    lane: Lane,
    slots: &mut [Slot],
) -> Vec<Group> {
    let mut groups: Vec<(Group, Vec<Bytes>)> = Vec::new();
    for &i in todo {
        let (Some(plan), Some(key)) = (plans.get(i), get.keys.get(i)) else {
            continue;
        };
        let located = match (&plan.route.replicas, plan.order.get(round)) {
            (Some(r), Some(&t)) => r
                .targets
                .get(t)
                .ok_or_else(closed)
                .and_then(|t| gutter::locate(&t.pool, t.gutter.as_ref(), key)),
            _ => gutter::locate(plan.route.owner(), plan.route.gutter.as_ref(), key),
        };
        let (server, g) = match located {
            Ok((s, g)) => (s.clone(), g.map(|g| g.ttl)),
            Err(e) => {
                slots[i] = Slot::Error(Reply::Static(e.reply()));
                continue;
            }
        };
        let cap = g.filter(|_| matches!(get.kind, Retrieval::Gat | Retrieval::Gats));
        let at = groups
            .iter()
            .position(|(gr, _)| Arc::ptr_eq(&gr.server, &server) && gr.gutter == cap.is_some());
        let at = match at {
            Some(at) => at,
            None => {
                groups.push((
                    Group {
                        server,
                        gutter: cap.is_some(),
                        keys: Vec::new(),
                        pending: Err(closed()),
                    },
                    Vec::new(),
                ));
                groups.len() - 1
            }
        };
        if let Some((gr, ks)) = groups.get_mut(at) {
            gr.keys.push(i);
            ks.push(key.clone());
        }
    }
    groups
        .into_iter()
        .map(|(mut g, ks)| {
            let exptime = match (g.gutter, plans.get(g.keys[0])) {
                (true, Some(p)) => {
                    let ttl = gutter_ttl(p, round).unwrap_or(u32::MAX);
                    gutter::cap_exptime(get.exptime, ttl)
                }
                _ => get.exptime,
            };
            g.pending = g.server.send(
                lane,
                Op::Get {
                    kind: get.kind,
                    exptime,
                    keys: ks,
                },
            );
            g
        })
        .collect()
}

fn gutter_ttl(plan: &Plan, round: usize) -> Option<u32> {
    match (&plan.route.replicas, plan.order.get(round)) {
        (Some(r), Some(&t)) => r.targets.get(t)?.gutter.as_ref().map(|g| g.ttl),
        _ => plan.route.gutter.as_ref().map(|g| g.ttl),
    }
}

/// Records a group's answer in its keys' slots; keys to try again are left `Todo`.
fn settle(plans: &[Plan], slots: &mut [Slot], keys: &[usize], answer: Answer, round: usize) {
    let target = |i: usize| -> Option<&Target> {
        let plan = plans.get(i)?;
        let r = plan.route.replicas.as_ref()?;
        r.targets.get(*plan.order.get(round)?)
    };
    let more = |i: usize| plans.get(i).is_some_and(|p| round + 1 < p.tries());
    let miss_failover = |i: usize| {
        plans
            .get(i)
            .and_then(|p| p.route.replicas.as_ref())
            .is_some_and(|r| r.read_miss_failover)
    };
    match answer {
        Ok(Response::Values(values)) => {
            for (&i, found) in keys.iter().zip(pair(values, keys.len())) {
                let t = target(i);
                match found {
                    Some(v) => {
                        if let Some(t) = t {
                            t.m.read_hit.inc();
                        }
                        slots[i] = Slot::Hit(v, round);
                    }
                    None => {
                        if let Some(t) = t {
                            t.m.read_miss.inc();
                        }
                        if miss_failover(i) && more(i) {
                            if let Some(t) = t {
                                t.m.failover_miss.inc();
                            }
                            slots[i] = Slot::Todo;
                        } else {
                            slots[i] = Slot::Miss;
                        }
                    }
                }
            }
        }
        other => {
            let reply = match other {
                Ok(Response::Line(l)) => Reply::Line(l),
                Err(e) => Reply::Static(e.reply()),
                Ok(_) => Reply::Static(ErrorKind::Protocol.reply()),
            };
            for &i in keys {
                let t = target(i);
                if let Some(t) = t {
                    t.m.read_error.inc();
                }
                if more(i) {
                    if let Some(t) = t {
                        t.m.failover_error.inc();
                    }
                    slots[i] = Slot::Todo;
                } else {
                    slots[i] = Slot::Error(reply.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_spread_over_the_replicas() {
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            let h = key_hash(format!("key:{i}").as_bytes(), HOME_SEED) % 2;
            counts[h as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (4_500..5_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_checked_meta_write_loses_only_its_cas_token() {
        let m = crate::protocol::command::MetaRequest {
            verb: MetaVerb::Set,
            key: Bytes::from_static(b"C1"),
            line: Bytes::from_static(b"ms C1 2 C99 T5 F3"),
            data: Some(Bytes::from_static(b"hi")),
            quiet: false,
            flags: (1 << (b'C' - b'A')) | (1 << (b'T' - b'A')) | (1 << (b'F' - b'A')),
            mode: None,
        };
        let Some(Keyed::Meta(out)) = unchecked(&Keyed::Meta(m)) else {
            panic!("a meta request stays one")
        };
        assert_eq!(&out.line[..], b"ms C1 2 T5 F3");
        assert!(!out.has(b'C'));
    }
}
