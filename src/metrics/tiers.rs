//! Fallback tiers: lookups per tier, copies into tier 0, writes to the lower tiers.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, counters, gauge_vec};

/// Per (pool, tier) lookup counters.
#[derive(Clone)]
pub struct TierMetrics {
    /// `memroute_tier_lookups_total{pool,tier,result="hit"}`
    pub hits: IntCounter,
    /// `memroute_tier_lookups_total{pool,tier,result="miss"}`
    pub misses: IntCounter,
    /// `memroute_tier_lookups_total{pool,tier,result="error"}`
    pub errors: IntCounter,
}

/// `memroute_lower_tier_writes_total{action,result}` for one action.
pub struct LowerWrites {
    /// `result="ok"`
    pub ok: IntCounter,
    /// `result="failed"`
    pub failed: IntCounter,
}

impl LowerWrites {
    /// Counts one write to a lower tier.
    pub fn count(&self, ok: bool) {
        if ok { &self.ok } else { &self.failed }.inc();
    }
}

/// `memroute_tombstones_total{result}`, resolved.
pub struct Tombstones {
    /// `result="written"`: a new tombstone.
    pub written: IntCounter,
    /// `result="existing"`: one was there already; its life was extended.
    pub existing: IntCounter,
    /// `result="failed"`: tier 0 could not take it.
    pub failed: IntCounter,
    /// `result="honored"`: a read did not look below because of one.
    pub honored: IntCounter,
}

impl Tombstones {
    fn register(r: &Registry) -> Tombstones {
        let family = counter_vec(
            r,
            "memroute_tombstones_total",
            "Tier-0 tombstones for lower-tier invalidations that failed, and reads they stopped.",
            &["result"],
        );
        let c = |result| family.with_label_values(&[result]);
        Tombstones {
            written: c("written"),
            existing: c("existing"),
            failed: c("failed"),
            honored: c("honored"),
        }
    }
}

/// The tier families.
pub struct TiersMetrics {
    lookups: IntCounterVec,
    /// `memroute_fallback_copies_total{result="ok"}`
    pub copies_ok: IntCounter,
    /// `memroute_fallback_copies_total{result="not_stored"}`: tier 0 had the key already.
    pub copies_not_stored: IntCounter,
    /// `memroute_fallback_copies_total{result="failed"}`
    pub copies_failed: IntCounter,
    /// `memroute_lower_tier_writes_total{action="delete"}`: deletes after a tier-0 change.
    pub lower_deletes: LowerWrites,
    /// `memroute_lower_tier_writes_total{action="set"}`: sets after a tier-0 change.
    pub lower_sets: LowerWrites,
    /// `memroute_lower_tier_writes_total{action="double_delete"}`: the delayed second delete.
    pub double_deletes: LowerWrites,
    reshard_lookups: IntCounterVec,
    /// `memroute_reshard_copies_total{pool,result}`: copies from a resized pool's previous ring
    /// into its new one (ok / not_stored / failed).
    pub reshard_copies: IntCounterVec,
    /// `memroute_reshard_previous_rings{pool}`: previous rings a resized pool still asks.
    pub reshard_rings: IntGaugeVec,
    /// `memroute_tombstones_total{result}`: tombstones written into tier 0 for invalidations a
    /// lower tier could not take, and reads they stopped.
    pub tombstones: Tombstones,
    /// `memroute_invalidation_replays_total{result}`: the per-server replay queue of failed
    /// lower-tier deletes (queued / replayed / retried / overflow / dropped).
    pub replays: IntCounterVec,
    /// `memroute_lower_tier_unknown_total{command}`: `SERVER_ERROR` answers because the outcome
    /// depended on a lower tier that could not be asked.
    pub lower_unknown: IntCounterVec,
}

impl TiersMetrics {
    pub(super) fn register(r: &Registry) -> TiersMetrics {
        let [copies_ok, copies_not_stored, copies_failed] = counters(
            r,
            "memroute_fallback_copies_total",
            "Items copied from a lower tier into tier 0, by result.",
            "result",
            ["ok", "not_stored", "failed"],
        );
        let lower = counter_vec(
            r,
            "memroute_lower_tier_writes_total",
            "Writes to lower tiers after a tier-0 change (delete or set), by result.",
            &["action", "result"],
        );
        let writes = |action| LowerWrites {
            ok: lower.with_label_values(&[action, "ok"]),
            failed: lower.with_label_values(&[action, "failed"]),
        };
        TiersMetrics {
            lookups: counter_vec(
                r,
                "memroute_tier_lookups_total",
                "Key lookups per pool and tier position, by result.",
                &["pool", "tier", "result"],
            ),
            copies_ok,
            copies_not_stored,
            copies_failed,
            lower_deletes: writes("delete"),
            lower_sets: writes("set"),
            double_deletes: writes("double_delete"),
            reshard_lookups: counter_vec(
                r,
                "memroute_reshard_lookups_total",
                "Lookups of moved keys in a resized pool's previous ring, by result.",
                &["pool", "result"],
            ),
            reshard_copies: counter_vec(
                r,
                "memroute_reshard_copies_total",
                "Items copied from a resized pool's previous ring into its new ring, by result.",
                &["pool", "result"],
            ),
            reshard_rings: gauge_vec(
                r,
                "memroute_reshard_previous_rings",
                "Previous rings of a resized pool still asked for moved keys.",
                &["pool"],
            ),
            tombstones: Tombstones::register(r),
            replays: counter_vec(
                r,
                "memroute_invalidation_replays_total",
                "Failed lower-tier deletes queued and replayed when the server is back, by result.",
                &["result"],
            ),
            lower_unknown: counter_vec(
                r,
                "memroute_lower_tier_unknown_total",
                "SERVER_ERROR answers whose outcome depended on an unreachable lower tier.",
                &["command"],
            ),
        }
    }

    /// Lookup counters for the previous rings of a resized pool.
    pub fn reshard_tier(&self, pool: &str) -> TierMetrics {
        let get = |result| self.reshard_lookups.with_label_values(&[pool, result]);
        TierMetrics {
            hits: get("hit"),
            misses: get("miss"),
            errors: get("error"),
        }
    }

    /// Handles for one tier position of a pool.
    pub fn tier(&self, pool: &str, tier: usize) -> TierMetrics {
        let t = tier.to_string();
        let get = |result| self.lookups.with_label_values(&[pool, &t, result]);
        TierMetrics {
            hits: get("hit"),
            misses: get("miss"),
            errors: get("error"),
        }
    }
}
