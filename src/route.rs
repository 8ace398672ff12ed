//! From a key to the pools that serve it.
//!
//! [`Router`] picks the route whose prefix is the longest match of the key (`""` matches all).
//! A [`Route`] lists its tiers: tier 0 owns the keys, later tiers are older pools that still hold
//! warm data. [`forward`] serves single-tier routes (plain routing, the fast path) and
//! [`tiers`] implements the fallback semantics of DESIGN §4.
//!
//! [`dispatch`] is the one door from the session: it picks plain or tiered routing for a
//! command and returns the reply future with the barrier flag (see the session). Routes may also
//! be [`replicas`] (every key in several pools), fail over to a [`gutter`] pool while a server is
//! down, and copy some keys' requests to a [`shadow`] pool.

pub mod describe;
pub mod forward;
pub mod group;
pub mod gutter;
pub mod replicas;
pub mod shadow;
pub mod tiers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{BackendError, ErrorKind, Lane, Pool, Pools};
use crate::config::{LowerOnWrite, RouteConfig};
use crate::metrics::{Metrics, TierMetrics};
use crate::protocol::backend::Response;
use crate::protocol::command::{Command, Keyed};
use crate::protocol::reply::{NO_ROUTE, Reply};
use tiers::keylock::KeyLocks;

/// One `[[routes]]` entry bound to live pools.
pub struct Route {
    /// The key prefix.
    pub prefix: String,
    /// Tier 0 first.
    pub tiers: Vec<Arc<Pool>>,
    /// Per-tier lookup counters (same order as `tiers`).
    pub tier_metrics: Vec<TierMetrics>,
    /// Copy lower-tier hits into tier 0.
    pub warm: bool,
    /// TTL for copies when a lower tier cannot tell the remaining TTL.
    pub warm_ttl: Option<Duration>,
    /// What writes do to the lower tiers.
    pub lower_on_write: LowerOnWrite,
    /// Fallback counters (copies, lower-tier writes).
    pub metrics: Arc<Metrics>,
    /// Copy-ups hold their key shared, deletes exclusively (see [`tiers::keylock`]).
    pub key_locks: KeyLocks,
    /// `replicas = [...]`: the route's pools, each holding every key.
    pub replicas: Option<Arc<replicas::Replicas>>,
    /// Tier 0's gutter pool (its `failover`), on a route without fallback tiers.
    pub gutter: Option<gutter::Gutter>,
    /// `shadow = { ... }`: copies of some keys' requests for a candidate pool.
    pub shadow: Option<shadow::Shadow>,
    /// Previous rings of resized pools among `tiers` ([`tiers::reshard`]); `None` (the common
    /// case) when no window is open.
    pub reshard: Option<Box<tiers::reshard::Windows>>,
    /// Life of a tombstone for an explicit lower tier ([`tiers::tombstone`]).
    pub tombstone_ttl: Duration,
    /// Failed lower-tier deletes to send again ([`tiers::replay`]); shared by the process.
    pub replay: Arc<tiers::replay::Replay>,
}

impl Route {
    /// Binds a route config to the snapshot's pools (validation guarantees they exist).
    pub fn new(config: &RouteConfig, pools: &Pools, metrics: &Arc<Metrics>) -> Option<Route> {
        let tiers: Option<Vec<Arc<Pool>>> =
            config.tiers.iter().map(|t| pools.get(t).cloned()).collect();
        let tiers = tiers?;
        let gutter = tiers
            .first()
            .filter(|_| tiers.len() == 1)
            .and_then(|p| gutter::Gutter::of(p, pools, metrics));
        let tier_metrics = tiers
            .iter()
            .enumerate()
            .map(|(i, p)| metrics.tiers.tier(p.name(), i))
            .collect();
        Some(Route {
            prefix: config.prefix.clone(),
            tiers,
            tier_metrics,
            warm: config.warm,
            warm_ttl: config.warm_ttl,
            lower_on_write: config.lower_on_write,
            metrics: metrics.clone(),
            key_locks: KeyLocks::default(),
            replicas: replicas::Replicas::new(config, pools, metrics).map(Arc::new),
            gutter,
            shadow: shadow::Shadow::new(config, pools, metrics),
            reshard: None,
            tombstone_ttl: config.tombstone_ttl,
            replay: Arc::new(tiers::replay::Replay::new(metrics)),
        })
    }

    /// Tier 0.
    pub fn owner(&self) -> &Arc<Pool> {
        &self.tiers[0]
    }

    /// True when the route has fallback tiers.
    pub fn is_tiered(&self) -> bool {
        self.tiers.len() > 1
    }
}

/// Longest-prefix route lookup.
pub struct Router {
    /// Longest prefix first.
    routes: Vec<Arc<Route>>,
    /// Some route has fallback tiers (otherwise a multi-key get needs no per-key check).
    any_tiered: bool,
    /// Some route has replicas or a shadow (the same, for those).
    any_replicated: bool,
    any_shadow: bool,
}

impl Router {
    /// Orders routes so the first match is the longest prefix.
    pub fn new(mut routes: Vec<Arc<Route>>) -> Router {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let any_tiered = routes.iter().any(|r| r.is_tiered());
        let any_replicated = routes.iter().any(|r| r.replicas.is_some());
        let any_shadow = routes.iter().any(|r| r.shadow.is_some());
        Router {
            routes,
            any_tiered,
            any_replicated,
            any_shadow,
        }
    }

    /// The route for `key`, if any.
    pub fn route(&self, key: &[u8]) -> Option<&Arc<Route>> {
        // The catch-all "" is checked without a call to memcmp: it is often the only route,
        // and a 10-key get looks it up for every key.
        self.routes
            .iter()
            .find(|r| r.prefix.is_empty() || key.starts_with(r.prefix.as_bytes()))
    }

    /// True if some route has fallback tiers.
    pub fn any_tiered(&self) -> bool {
        self.any_tiered
    }

    /// Every route, longest prefix first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// A reply still being produced.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// A reply that is already known.
pub fn ready(reply: Reply) -> ReplyFuture {
    Box::pin(std::future::ready(reply))
}

/// Turns a backend answer into the client's reply.
pub fn to_reply(answer: Result<Response, BackendError>) -> Reply {
    match answer {
        Ok(Response::Line(line)) => Reply::Line(line),
        Ok(Response::Values(values)) => {
            Reply::Values(values.into_iter().map(|v| v.block).collect())
        }
        Ok(Response::Meta { .. }) => Reply::Static(ErrorKind::Protocol.reply()),
        Err(e) => Reply::Static(e.reply()),
    }
}

/// Sends a client's command on its way: plain routing for keys on single-tier routes, the
/// fallback semantics for tiered ones. The flag is true when the request is a barrier in the
/// client's pipeline (it takes several round trips on a tiered route).
pub fn dispatch(command: Command, router: &Router, lane: Lane) -> (ReplyFuture, bool) {
    match command {
        Command::Retrieve(get) => {
            let copies = match router.any_shadow {
                true => shadow::offer_retrieve(router, lane, &get),
                false => Vec::new(),
            };
            let (fut, barrier) = if router.any_tiered()
                && get
                    .keys
                    .iter()
                    .any(|k| router.route(k).is_some_and(|r| r.tiered_for(k)))
            {
                (tiers::retrieve(router, lane, get), true)
            } else if router.any_replicated
                && get
                    .keys
                    .iter()
                    .any(|k| router.route(k).is_some_and(|r| r.replicas.is_some()))
            {
                (replicas::retrieve(router, lane, get), false)
            } else {
                (forward::multi_get(router, lane, get), false)
            };
            (shadow::tee(fut, copies), barrier)
        }
        Command::Keyed(keyed) => {
            let Some(route) = router.route(keyed.key()) else {
                return (ready(Reply::Static(NO_ROUTE)), false);
            };
            // What `q` hides is dropped here, once, for plain and tiered routes alike.
            let quiet = match &keyed {
                Keyed::Meta(m) if m.quiet => Some(m.clone()),
                _ => None,
            };
            let copy = route
                .shadow
                .as_ref()
                .and_then(|s| s.offer_keyed(lane, &keyed));
            let (fut, barrier) = if route.tiered_for(keyed.key()) {
                (tiers::dispatch(route.clone(), lane, keyed), true)
            } else if let Some(r) = &route.replicas {
                replicas::dispatch(r, lane, keyed)
            } else {
                (forward::single(route, lane, keyed), false)
            };
            let fut = shadow::tee(fut, copy.into_iter().collect());
            match quiet {
                None => (fut, barrier),
                Some(m) => {
                    let fut: ReplyFuture = Box::pin(async move {
                        match fut.await {
                            Reply::Line(l) if m.hides(&l) => Reply::None,
                            reply => reply,
                        }
                    });
                    (fut, barrier)
                }
            }
        }
    }
}
