//! Warm resharding: after a reload changes a pool's ring (servers, weights, names, hash,
//! hash tag or distribution), the pool's previous ring stays behind it as an implicit lower
//! tier for `reshard_warmup`.
//!
//! A route's tier list gets each resized pool's previous rings right after the pool (newest
//! first): `[new, old]` with `new` resized twice is `[new, new@1, new@2, old]`. A previous ring
//! is asked about a key only when it puts the key on a different server than the newer rings of
//! its pool ([`Route::asks`]), so the keys that did not move are served by plain routing
//! ([`Route::tiered_for`]) and cost nothing extra; a key that moved is served exactly like a
//! two-tier route (reads fall through and copy up with the remaining TTL, writes and deletes
//! invalidate the previous owner, tombstones when that fails). At most
//! [`MAX_PREVIOUS_RINGS`] previous rings are kept per pool; a further reload drops the oldest.
//! With `distribution = "random"` on either side there is no owner to find: no window.
//! Replicated routes (`replicas = [...]`) get no previous rings; on a route with a gutter pool
//! (`failover`) a moved key is served by the tier path during the window, without the gutter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::backend::Pool;
use crate::config::{LowerOnWrite, PoolConfig};
use crate::metrics::Metrics;
use crate::ring::Distribution;
use crate::route::Route;

/// Previous rings kept per pool (several reloads within one window stack up to this many).
pub const MAX_PREVIOUS_RINGS: usize = 3;

/// A resized pool's previous ring, held until `until`.
#[derive(Clone)]
pub struct PreviousRing {
    /// The pool as the previous snapshot built it: its ring and its servers (a removed server
    /// stays open only through this).
    pub pool: Arc<Pool>,
    /// When the window closes.
    pub until: Instant,
}

/// The previous-ring tiers of one route.
pub struct Windows {
    /// Tiers named in the config.
    pub explicit: usize,
    /// For each tier of [`Route::tiers`]: `Some` when it is a previous ring.
    pub tiers: Vec<Option<PreviousTier>>,
}

/// One previous ring among a route's tiers.
pub struct PreviousTier {
    /// The tier (in [`Route::tiers`]) of the pool this is a previous ring of.
    pub base: usize,
    /// When the window closes.
    pub until: Instant,
    /// `memroute_reshard_copies_total{pool}`: ok, not_stored, failed.
    pub copies: [IntCounter; 3],
}

/// True when a reload from `old` to `new` moves keys: anything the ring is built from changed.
/// (Settings such as `timeout` do not move keys.)
pub fn ring_changed(old: &PoolConfig, new: &PoolConfig) -> bool {
    fn servers(p: &PoolConfig) -> Vec<(&str, &str, u32)> {
        p.servers
            .iter()
            .map(|s| (s.address.as_str(), s.name.as_str(), s.weight))
            .collect()
    }
    servers(old) != servers(new)
        || (old.hash, old.hash_tag, old.distribution) != (new.hash, new.hash_tag, new.distribution)
}

/// True when a window may open between the two: both sides place keys deterministically.
pub fn reshardable(old: &PoolConfig, new: &PoolConfig) -> bool {
    old.distribution != Distribution::Random
        && new.distribution != Distribution::Random
        && !new.reshard_warmup.is_zero()
}

impl Route {
    /// Inserts the previous rings of the route's pools after each pool (`previous(name)` gives
    /// a pool's open windows, newest first). A route with none is left as it was.
    pub fn with_previous<'a>(
        mut self,
        previous: impl Fn(&str) -> &'a [PreviousRing],
        metrics: &Metrics,
    ) -> Route {
        // A replicated route writes every replica itself: the tier path (which writes tier 0
        // only) must not take its moved keys. Such a route is cold on a resize, as before.
        if self.replicas.is_some() || self.tiers.iter().all(|p| previous(p.name()).is_empty()) {
            return self;
        }
        let explicit = self.tiers.len();
        let mut tiers = Vec::new();
        let mut tier_metrics = Vec::new();
        let mut kinds = Vec::new();
        for (pool, m) in self.tiers.drain(..).zip(self.tier_metrics.drain(..)) {
            let base = tiers.len();
            let name = pool.name().to_string();
            tiers.push(pool);
            tier_metrics.push(m);
            kinds.push(None);
            for p in previous(&name) {
                tiers.push(p.pool.clone());
                tier_metrics.push(metrics.tiers.reshard_tier(&name));
                let c = |result| {
                    metrics
                        .tiers
                        .reshard_copies
                        .with_label_values(&[&name, result])
                };
                kinds.push(Some(PreviousTier {
                    base,
                    until: p.until,
                    copies: [c("ok"), c("not_stored"), c("failed")],
                }));
            }
        }
        self.tiers = tiers;
        self.tier_metrics = tier_metrics;
        self.reshard = Some(Box::new(Windows {
            explicit,
            tiers: kinds,
        }));
        self
    }

    /// The previous-ring tier at `tier`, if it is one.
    pub fn previous(&self, tier: usize) -> Option<&PreviousTier> {
        self.reshard.as_ref()?.tiers.get(tier)?.as_ref()
    }

    /// Whether tier `tier` is asked about `key`: tiers named in the config always; a previous
    /// ring only while its window is open and when it puts the key on another server than the
    /// newer rings of its pool (a key that did not move is not asked twice).
    pub fn asks(&self, tier: usize, key: &[u8]) -> bool {
        let Some(p) = self.previous(tier) else {
            return true;
        };
        if p.until <= Instant::now() {
            return false;
        }
        let Ok(server) = self.tiers[tier].locate(key) else {
            // No live server in that ring: asking fails, and that failure must be seen.
            return true;
        };
        !(p.base..tier).any(|t| {
            self.tiers[t]
                .locate(key)
                .is_ok_and(|s| Arc::ptr_eq(s, server) || s.address() == server.address())
        })
    }

    /// Whether `key` needs the tier machinery: a route with explicit lower tiers always; a
    /// route whose only lower tiers are previous rings only for keys that moved.
    #[inline]
    pub fn tiered_for(&self, key: &[u8]) -> bool {
        match &self.reshard {
            None => self.is_tiered(),
            Some(w) => w.explicit > 1 || (1..self.tiers.len()).any(|t| self.asks(t, key)),
        }
    }

    /// What a tier-0 write does to tier `tier`: a previous ring is always invalidated (it must
    /// never serve a value older than the write); explicit tiers follow `lower_on_write`.
    pub fn lower_mode(&self, tier: usize) -> LowerOnWrite {
        if self.previous(tier).is_some() {
            LowerOnWrite::Delete
        } else {
            self.lower_on_write
        }
    }

    /// Whether a `get` hit from tier `tier` is copied up: always from a previous ring.
    pub fn warms(&self, tier: usize) -> bool {
        self.warm || self.previous(tier).is_some()
    }

    /// How long a tombstone for an invalidation tier `tier` missed must live: until the window
    /// closes for a previous ring (it is not asked after that), `tombstone_ttl` otherwise.
    pub fn tombstone_ttl_for(&self, tier: usize) -> Duration {
        match self.previous(tier) {
            Some(p) => p.until.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            None => self.tombstone_ttl,
        }
    }
}
