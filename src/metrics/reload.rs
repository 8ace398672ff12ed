//! Config reloads.

use prometheus::{IntCounter, IntGauge, Registry};

use super::{counters, gauge};

/// What happened to the config file.
pub struct ReloadMetrics {
    /// `memroute_config_reloads_total{result="success"}`
    pub applied: IntCounter,
    /// `memroute_config_reloads_total{result="failure"}`: the file was rejected.
    pub rejected: IntCounter,
    /// `memroute_config_last_reload_success_timestamp_seconds`
    pub last_success: IntGauge,
    /// `memroute_config_last_reload_successful`: 1 if the last reload attempt applied the file
    /// or found it to be the running text, 0 if the file was rejected (the previous config keeps
    /// running).
    pub last_ok: IntGauge,
}

impl ReloadMetrics {
    pub(super) fn register(r: &Registry) -> ReloadMetrics {
        let [applied, rejected] = counters(
            r,
            "memroute_config_reloads_total",
            "Config reloads by result.",
            "result",
            ["success", "failure"],
        );
        let last_ok = gauge(
            r,
            "memroute_config_last_reload_successful",
            "1 if the config file is the running config, 0 if the last reload rejected it.",
        );
        last_ok.set(1);
        ReloadMetrics {
            applied,
            rejected,
            last_success: gauge(
                r,
                "memroute_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            ),
            last_ok,
        }
    }
}
