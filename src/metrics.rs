//! Every Prometheus series memroute exports, with handles resolved once.
//!
//! Per-command series are arrays indexed by [`Cmd`]; per-server series are resolved when a
//! backend server is created ([`ServerMetrics`]); the request path never looks up a label.
//! The memcached `stats` command reads the same counters.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Commands as metric labels (bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmd {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    Version,
    Verbosity,
    Stats,
    FlushAll,
    CacheMemlimit,
    Quit,
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArith,
    MetaNoop,
    MetaDebug,
    /// Unknown or malformed commands.
    Invalid,
}

impl Cmd {
    /// Every command, in label order.
    pub const ALL: [Cmd; 27] = [
        Cmd::Get,
        Cmd::Gets,
        Cmd::Gat,
        Cmd::Gats,
        Cmd::Set,
        Cmd::Add,
        Cmd::Replace,
        Cmd::Append,
        Cmd::Prepend,
        Cmd::Cas,
        Cmd::Delete,
        Cmd::Incr,
        Cmd::Decr,
        Cmd::Touch,
        Cmd::Version,
        Cmd::Verbosity,
        Cmd::Stats,
        Cmd::FlushAll,
        Cmd::CacheMemlimit,
        Cmd::Quit,
        Cmd::MetaGet,
        Cmd::MetaSet,
        Cmd::MetaDelete,
        Cmd::MetaArith,
        Cmd::MetaNoop,
        Cmd::MetaDebug,
        Cmd::Invalid,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Cmd::Get => "get",
            Cmd::Gets => "gets",
            Cmd::Gat => "gat",
            Cmd::Gats => "gats",
            Cmd::Set => "set",
            Cmd::Add => "add",
            Cmd::Replace => "replace",
            Cmd::Append => "append",
            Cmd::Prepend => "prepend",
            Cmd::Cas => "cas",
            Cmd::Delete => "delete",
            Cmd::Incr => "incr",
            Cmd::Decr => "decr",
            Cmd::Touch => "touch",
            Cmd::Version => "version",
            Cmd::Verbosity => "verbosity",
            Cmd::Stats => "stats",
            Cmd::FlushAll => "flush_all",
            Cmd::CacheMemlimit => "cache_memlimit",
            Cmd::Quit => "quit",
            Cmd::MetaGet => "mg",
            Cmd::MetaSet => "ms",
            Cmd::MetaDelete => "md",
            Cmd::MetaArith => "ma",
            Cmd::MetaNoop => "mn",
            Cmd::MetaDebug => "me",
            Cmd::Invalid => "invalid",
        }
    }
}

/// Per-command handles.
pub struct CmdMetrics {
    /// `memroute_requests_total{command}`
    pub requests: IntCounter,
    /// `memroute_request_errors_total{command,kind="client"}`: the client sent something invalid.
    pub client_errors: IntCounter,
    /// `memroute_request_errors_total{command,kind="server"}`: a backend failed or timed out.
    pub server_errors: IntCounter,
    /// `memroute_request_duration_seconds{command}`
    pub latency: Histogram,
}

/// `memroute_command_results_total{command,result}`: what the cache answered to the keyed
/// commands other than retrievals, under memcached's `stats` names (`delete_hits`,
/// `cas_badval`, …). Counted from the reply the client gets, so after fallback tiers.
pub struct Results {
    /// `delete` answered `DELETED`.
    pub delete_hits: IntCounter,
    /// `delete` answered `NOT_FOUND`.
    pub delete_misses: IntCounter,
    /// `incr` answered a number.
    pub incr_hits: IntCounter,
    /// `incr` answered `NOT_FOUND`.
    pub incr_misses: IntCounter,
    /// `decr` answered a number.
    pub decr_hits: IntCounter,
    /// `decr` answered `NOT_FOUND`.
    pub decr_misses: IntCounter,
    /// `cas` answered `STORED`.
    pub cas_hits: IntCounter,
    /// `cas` answered `NOT_FOUND`.
    pub cas_misses: IntCounter,
    /// `cas` answered `EXISTS` (the item changed since the client's `gets`).
    pub cas_badval: IntCounter,
    /// `touch` answered `TOUCHED`.
    pub touch_hits: IntCounter,
    /// `touch` answered `NOT_FOUND`.
    pub touch_misses: IntCounter,
}

/// Per-server handles, created once per backend server.
#[derive(Clone)]
pub struct ServerMetrics {
    /// `memroute_backend_requests_total{server}`
    pub requests: IntCounter,
    /// `memroute_backend_commands_total{server}`
    pub commands: IntCounter,
    /// `memroute_backend_errors_total{server,kind="timeout"}`
    pub timeouts: IntCounter,
    /// `memroute_backend_errors_total{server,kind="connect"}`
    pub connect_errors: IntCounter,
    /// `memroute_backend_errors_total{server,kind="protocol"}`
    pub protocol_errors: IntCounter,
    /// `memroute_backend_errors_total{server,kind="closed"}`: connection lost with requests in flight.
    pub closed: IntCounter,
    /// `memroute_backend_errors_total{server,kind="down"}`: refused fast while marked down.
    pub fast_fails: IntCounter,
    /// `memroute_backend_errors_total{server,kind="tls"}`: TLS handshakes that failed (the
    /// server's certificate does not verify, the server does not speak TLS, …).
    pub tls_errors: IntCounter,
    /// `memroute_server_up{server}`: 1 up, 0 marked down.
    pub up: IntGauge,
    /// `memroute_server_down_total{server}`: times marked down.
    pub marked_down: IntCounter,
    /// `memroute_server_ejections_total{server}`: times taken out of a ring (eject = true).
    pub ejections: IntCounter,
}

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

/// All metrics of one process.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `memroute_client_connections` (current).
    pub connections: IntGauge,
    /// `memroute_client_connections_total`
    pub connections_total: IntCounter,
    /// `memroute_client_connections_refused_total`
    pub connections_refused: IntCounter,
    cmds: Vec<CmdMetrics>,
    /// Hits and misses of the non-retrieval keyed commands.
    pub results: Results,
    /// `memroute_get_keys_total{result="hit"}`: keys found (after fallback).
    pub get_hits: IntCounter,
    /// `memroute_get_keys_total{result="miss"}`
    pub get_misses: IntCounter,
    /// `memroute_fallback_copies_total{result}`: ok / not_stored / failed.
    pub copies_ok: IntCounter,
    /// see `copies_ok`
    pub copies_not_stored: IntCounter,
    /// see `copies_ok`
    pub copies_failed: IntCounter,
    /// `memroute_lower_tier_writes_total{action,result}`
    pub lower_writes: IntCounterVec,
    /// `memroute_config_reloads_total{result}`
    pub reloads: IntCounterVec,
    /// `memroute_config_last_reload_success_timestamp_seconds`
    pub last_reload: IntGauge,
    /// `memroute_config_last_reload_successful`: 1 if the last reload attempt applied the file
    /// or found it to be the running text, 0 if the file was rejected (the previous config keeps
    /// running).
    pub last_reload_ok: IntGauge,
    /// `memroute_client_connections_max`: the configured `max_connections`.
    pub connections_max: IntGauge,
    tls_failures: Vec<IntCounter>,
    server_requests: IntCounterVec,
    server_commands: IntCounterVec,
    server_errors: IntCounterVec,
    server_up: IntGaugeVec,
    server_down: IntCounterVec,
    server_ejections: IntCounterVec,
    tier_lookups: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

impl Metrics {
    /// Creates and registers every series. (`expect`s here run once at start-up on constant
    /// names; a failure is a programming error caught by the unit tests.)
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let connections = IntGauge::new("memroute_client_connections", "Open client connections.")
            .expect("valid metric name");
        r.register(Box::new(connections.clone()))
            .expect("unique metric name");
        let requests = counter_vec(
            r,
            "memroute_requests_total",
            "Client requests by command.",
            &["command"],
        );
        let errors = counter_vec(
            r,
            "memroute_request_errors_total",
            "Client requests answered with an error, by command and side (client or server).",
            &["command", "kind"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "memroute_request_duration_seconds",
                "Time from parsing a request to its reply being ready, by command.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5,
            ]),
            &["command"],
        )
        .expect("valid metric name");
        r.register(Box::new(latency.clone()))
            .expect("unique metric name");
        let cmds = Cmd::ALL
            .iter()
            .map(|c| CmdMetrics {
                requests: requests.with_label_values(&[c.label()]),
                client_errors: errors.with_label_values(&[c.label(), "client"]),
                server_errors: errors.with_label_values(&[c.label(), "server"]),
                latency: latency.with_label_values(&[c.label()]),
            })
            .collect();
        let results = counter_vec(
            r,
            "memroute_command_results_total",
            "Answers to delete, incr, decr, cas and touch by result (hit, miss, badval).",
            &["command", "result"],
        );
        let result = |c: Cmd, r: &str| results.with_label_values(&[c.label(), r]);
        let results = Results {
            delete_hits: result(Cmd::Delete, "hit"),
            delete_misses: result(Cmd::Delete, "miss"),
            incr_hits: result(Cmd::Incr, "hit"),
            incr_misses: result(Cmd::Incr, "miss"),
            decr_hits: result(Cmd::Decr, "hit"),
            decr_misses: result(Cmd::Decr, "miss"),
            cas_hits: result(Cmd::Cas, "hit"),
            cas_misses: result(Cmd::Cas, "miss"),
            cas_badval: result(Cmd::Cas, "badval"),
            touch_hits: result(Cmd::Touch, "hit"),
            touch_misses: result(Cmd::Touch, "miss"),
        };
        let get_keys = counter_vec(
            r,
            "memroute_get_keys_total",
            "Keys asked for by retrieval commands, by final result after fallback tiers.",
            &["result"],
        );
        let copies = counter_vec(
            r,
            "memroute_fallback_copies_total",
            "Items copied from a lower tier into tier 0, by result.",
            &["result"],
        );
        let reloads = counter_vec(
            r,
            "memroute_config_reloads_total",
            "Config reloads by result.",
            &["result"],
        );
        let last_reload = IntGauge::new(
            "memroute_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
        )
        .expect("valid metric name");
        r.register(Box::new(last_reload.clone()))
            .expect("unique metric name");
        let last_reload_ok = IntGauge::new(
            "memroute_config_last_reload_successful",
            "1 if the config file is the running config, 0 if the last reload rejected it.",
        )
        .expect("valid metric name");
        r.register(Box::new(last_reload_ok.clone()))
            .expect("unique metric name");
        last_reload_ok.set(1);
        let connections_max = IntGauge::new(
            "memroute_client_connections_max",
            "The configured max_connections.",
        )
        .expect("valid metric name");
        r.register(Box::new(connections_max.clone()))
            .expect("unique metric name");
        // Process CPU, memory, open files and start time (Linux /proc).
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric name");
        let tls_failures = counter_vec(
            r,
            "memroute_client_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by reason.",
            &["reason"],
        );
        let tls_failures = crate::tls::accept::Failure::ALL
            .iter()
            .map(|f| tls_failures.with_label_values(&[f.label()]))
            .collect();
        let build = gauge_vec(r, "memroute_build_info", "Build information.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            connections,
            connections_total: counter(
                r,
                "memroute_client_connections_total",
                "Client connections accepted.",
            ),
            connections_refused: counter(
                r,
                "memroute_client_connections_refused_total",
                "Client connections refused over max_connections.",
            ),
            cmds,
            results,
            get_hits: get_keys.with_label_values(&["hit"]),
            get_misses: get_keys.with_label_values(&["miss"]),
            copies_ok: copies.with_label_values(&["ok"]),
            copies_not_stored: copies.with_label_values(&["not_stored"]),
            copies_failed: copies.with_label_values(&["failed"]),
            lower_writes: counter_vec(
                r,
                "memroute_lower_tier_writes_total",
                "Writes to lower tiers after a tier-0 change (delete or set), by result.",
                &["action", "result"],
            ),
            reloads,
            last_reload,
            last_reload_ok,
            connections_max,
            server_requests: counter_vec(
                r,
                "memroute_backend_requests_total",
                "Requests sent to a backend server (each of several merged gets counts).",
                &["server"],
            ),
            server_commands: counter_vec(
                r,
                "memroute_backend_commands_total",
                "Commands written to a backend server; adjacent gets merged into one count once.",
                &["server"],
            ),
            server_errors: counter_vec(
                r,
                "memroute_backend_errors_total",
                "Backend failures by server and kind.",
                &["server", "kind"],
            ),
            server_up: gauge_vec(
                r,
                "memroute_server_up",
                "1 while the server is considered up, 0 while marked down.",
                &["server"],
            ),
            server_down: counter_vec(
                r,
                "memroute_server_down_total",
                "Times a server was marked down after failure_limit consecutive failures.",
                &["server"],
            ),
            server_ejections: counter_vec(
                r,
                "memroute_server_ejections_total",
                "Times a server was taken out of a ring (eject = true).",
                &["server"],
            ),
            tls_failures,
            tier_lookups: counter_vec(
                r,
                "memroute_tier_lookups_total",
                "Key lookups per pool and tier position, by result.",
                &["pool", "tier", "result"],
            ),
            registry,
        }
    }

    /// Handles for one command.
    pub fn cmd(&self, cmd: Cmd) -> &CmdMetrics {
        &self.cmds[cmd as usize]
    }

    /// Handles for one backend server (call once per server).
    pub fn server(&self, server: &str) -> ServerMetrics {
        let err = |kind| self.server_errors.with_label_values(&[server, kind]);
        let m = ServerMetrics {
            requests: self.server_requests.with_label_values(&[server]),
            commands: self.server_commands.with_label_values(&[server]),
            timeouts: err("timeout"),
            connect_errors: err("connect"),
            protocol_errors: err("protocol"),
            closed: err("closed"),
            fast_fails: err("down"),
            tls_errors: err("tls"),
            up: self.server_up.with_label_values(&[server]),
            marked_down: self.server_down.with_label_values(&[server]),
            ejections: self.server_ejections.with_label_values(&[server]),
        };
        m.up.set(1);
        m
    }

    /// The counter of client TLS handshakes that failed for `why`.
    pub fn tls_failure(&self, why: crate::tls::accept::Failure) -> &IntCounter {
        &self.tls_failures[why as usize]
    }

    /// Handles for one tier position of a pool.
    pub fn tier(&self, pool: &str, tier: usize) -> TierMetrics {
        let t = tier.to_string();
        let get = |result| self.tier_lookups.with_label_values(&[pool, &t, result]);
        TierMetrics {
            hits: get("hit"),
            misses: get("miss"),
            errors: get("error"),
        }
    }

    /// Removes the series of a server that left the config.
    pub fn forget_server(&self, server: &str) {
        let _ = self.server_requests.remove_label_values(&[server]);
        let _ = self.server_commands.remove_label_values(&[server]);
        let _ = self.server_up.remove_label_values(&[server]);
        let _ = self.server_down.remove_label_values(&[server]);
        let _ = self.server_ejections.remove_label_values(&[server]);
        for kind in ["timeout", "connect", "protocol", "closed", "down", "tls"] {
            let _ = self.server_errors.remove_label_values(&[server, kind]);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prometheus::proto::MetricType;

    use super::*;

    /// Every label memroute may use: each has a small, config-bounded set of values. A key, a
    /// client address or anything else a client controls must never become a label.
    const BOUNDED_LABELS: [&str; 9] = [
        "command", "kind", "pool", "server", "tier", "result", "action", "version", "reason",
    ];

    /// The registry with a child in every vector, so every family is gathered.
    fn every_family() -> Metrics {
        let m = Metrics::new();
        let _ = m.server("127.0.0.1:11211");
        let _ = m.tier("main", 0);
        m.reloads.with_label_values(&["success"]);
        m.lower_writes.with_label_values(&["delete", "ok"]);
        m
    }

    #[test]
    fn metric_names_follow_the_prometheus_conventions() {
        let m = every_family();
        let families = m.registry.gather();
        let mut names = HashSet::new();
        for f in &families {
            let name = f.get_name();
            assert!(names.insert(name.to_string()), "{name}: registered twice");
            // process_* are the standard process collector's names, shared by every exporter.
            assert!(
                name.starts_with("memroute_") || name.starts_with("process_"),
                "{name}: no memroute_ prefix"
            );
            match f.get_field_type() {
                MetricType::COUNTER => {
                    assert!(name.ends_with("_total"), "{name}: counter without _total")
                }
                MetricType::HISTOGRAM => assert!(
                    name.ends_with("_seconds"),
                    "{name}: histogram not in seconds"
                ),
                _ => assert!(
                    !name.ends_with("_total"),
                    "{name}: only counters end in _total"
                ),
            }
            for metric in f.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        BOUNDED_LABELS.contains(&label.get_name()),
                        "{name}: unbounded label {:?}",
                        label.get_name()
                    );
                }
            }
        }
        // Every family was gathered (a vector without children is left out silently, and
        // would escape the checks above). Adding a series means raising this count.
        let ours = names.iter().filter(|n| n.starts_with("memroute_")).count();
        assert_eq!(ours, 23, "families: {names:?}");
    }
}
