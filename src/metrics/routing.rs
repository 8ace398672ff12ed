//! Replicated routes, gutter failover and shadow traffic (see [`crate::route::replicas`],
//! [`crate::route::gutter`], [`crate::route::shadow`]). The vectors are resolved per pool when a
//! route is built, never per request.

use prometheus::{IntCounterVec, Registry};

use super::counter_vec;

/// Counters of the route behaviours beside plain routing and fallback tiers.
pub struct RoutingMetrics {
    /// `memroute_replica_writes_total{pool,result}`: ok / error / dropped (async backlog full).
    pub replica_writes: IntCounterVec,
    /// `memroute_replica_reads_total{pool,result}`: hit / miss / error, per key.
    pub replica_reads: IntCounterVec,
    /// `memroute_replica_failovers_total{pool,reason}`: reads moved on from this replica.
    pub replica_failovers: IntCounterVec,
    /// `memroute_replica_disagreements_total{pool}`: this replica answered a write differently.
    pub replica_disagreements: IntCounterVec,
    /// `memroute_gutter_serves_total{pool,action}`: requests for a down server of `pool` that
    /// its gutter served.
    pub gutter_serves: IntCounterVec,
    /// `memroute_shadow_requests_total{pool,result}`: same / different / error / written / dropped.
    pub shadow_requests: IntCounterVec,
}

impl RoutingMetrics {
    pub(super) fn register(r: &Registry) -> RoutingMetrics {
        RoutingMetrics {
            replica_writes: counter_vec(
                r,
                "memroute_replica_writes_total",
                "Writes sent to a replica pool, by result (ok, error, dropped from the async backlog).",
                &["pool", "result"],
            ),
            replica_reads: counter_vec(
                r,
                "memroute_replica_reads_total",
                "Keys read from a replica pool, by result (hit, miss, error).",
                &["pool", "result"],
            ),
            replica_failovers: counter_vec(
                r,
                "memroute_replica_failovers_total",
                "Reads that moved on from this replica to the next, by reason (error, miss).",
                &["pool", "reason"],
            ),
            replica_disagreements: counter_vec(
                r,
                "memroute_replica_disagreements_total",
                "Writes this replica answered differently from the reply the client got.",
                &["pool"],
            ),
            gutter_serves: counter_vec(
                r,
                "memroute_gutter_serves_total",
                "Requests for a marked-down server of the pool that its gutter pool served.",
                &["pool", "action"],
            ),
            shadow_requests: counter_vec(
                r,
                "memroute_shadow_requests_total",
                "Requests copied to a shadow pool, by result (same, different, error, written, dropped).",
                &["pool", "result"],
            ),
        }
    }
}
