//! Every Prometheus series memroute exports, with handles resolved once.
//!
//! One struct per layer registers its own families: [`ClientMetrics`] (connections, requests by
//! [`Cmd`], results), [`BackendMetrics`] (per server, resolved when a backend server is
//! created), [`TiersMetrics`] (fallback tiers) and [`ReloadMetrics`]. Every handle the request
//! path touches is resolved before it runs: it never looks up a label (only the rare answers
//! that a lower tier could not be asked count by a looked-up `command` label). The memcached `stats`
//! command reads the same counters.

mod backend;
mod client;
mod reload;
mod routing;
mod tiers;

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub use backend::{BackendMetrics, ServerMetrics};
pub use client::{ClientMetrics, CmdMetrics, Results, TlsFailure};
pub use reload::ReloadMetrics;
pub use routing::RoutingMetrics;
pub use tiers::{LowerWrites, TierMetrics, TiersMetrics, Tombstones};

use crate::protocol::command::{Command, Keyed, MetaRequest, Retrieval, Storage};
use crate::protocol::meta::MetaVerb;

/// Declares a label enum from one list of `Variant => "label"`: the enum, its `ALL` (in label
/// order, the index of per-label arrays) and `label()` cannot drift apart.
macro_rules! labels {
    ($(#[$enum_doc:meta])* $vis:vis enum $enum:ident {
        $($(#[$doc:meta])* $name:ident => $label:literal,)*
    }) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $enum {
            $($(#[$doc])* #[doc = concat!("`", $label, "`")] $name,)*
        }

        impl $enum {
            /// Every value, in label order.
            pub const ALL: &'static [$enum] = &[$($enum::$name,)*];

            /// The label value.
            pub fn label(self) -> &'static str {
                match self {
                    $($enum::$name => $label,)*
                }
            }
        }
    };
}
pub(crate) use labels;

labels! {
    /// Commands as metric labels (a bounded set).
    pub enum Cmd {
        Get => "get",
        Gets => "gets",
        Gat => "gat",
        Gats => "gats",
        Set => "set",
        Add => "add",
        Replace => "replace",
        Append => "append",
        Prepend => "prepend",
        Cas => "cas",
        Delete => "delete",
        Incr => "incr",
        Decr => "decr",
        Touch => "touch",
        Version => "version",
        Verbosity => "verbosity",
        Stats => "stats",
        FlushAll => "flush_all",
        CacheMemlimit => "cache_memlimit",
        Quit => "quit",
        MetaGet => "mg",
        MetaSet => "ms",
        MetaDelete => "md",
        MetaArith => "ma",
        MetaNoop => "mn",
        MetaDebug => "me",
        /// Unknown or malformed commands.
        Invalid => "invalid",
    }
}

impl From<Retrieval> for Cmd {
    fn from(kind: Retrieval) -> Cmd {
        match kind {
            Retrieval::Get => Cmd::Get,
            Retrieval::Gets => Cmd::Gets,
            Retrieval::Gat => Cmd::Gat,
            Retrieval::Gats => Cmd::Gats,
        }
    }
}

impl From<Storage> for Cmd {
    fn from(kind: Storage) -> Cmd {
        match kind {
            Storage::Set => Cmd::Set,
            Storage::Add => Cmd::Add,
            Storage::Replace => Cmd::Replace,
            Storage::Append => Cmd::Append,
            Storage::Prepend => Cmd::Prepend,
            Storage::Cas => Cmd::Cas,
        }
    }
}

impl From<MetaVerb> for Cmd {
    fn from(verb: MetaVerb) -> Cmd {
        match verb {
            MetaVerb::Get => Cmd::MetaGet,
            MetaVerb::Set => Cmd::MetaSet,
            MetaVerb::Delete => Cmd::MetaDelete,
            MetaVerb::Arith => Cmd::MetaArith,
            MetaVerb::Debug => Cmd::MetaDebug,
        }
    }
}

impl From<&Keyed> for Cmd {
    fn from(keyed: &Keyed) -> Cmd {
        match keyed {
            Keyed::Store { kind, .. } => (*kind).into(),
            Keyed::Delete { .. } => Cmd::Delete,
            Keyed::Arith { incr: true, .. } => Cmd::Incr,
            Keyed::Arith { incr: false, .. } => Cmd::Decr,
            Keyed::Touch { .. } => Cmd::Touch,
            Keyed::Meta(MetaRequest { verb, .. }) => (*verb).into(),
            Keyed::CopyRead { .. } => Cmd::Get,
        }
    }
}

impl From<&Command> for Cmd {
    fn from(command: &Command) -> Cmd {
        match command {
            Command::Retrieve(get) => get.kind.into(),
            Command::Keyed(keyed) => keyed.into(),
        }
    }
}

/// All metrics of one process.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Connections, requests by command, results.
    pub client: ClientMetrics,
    /// Backend servers.
    pub backend: BackendMetrics,
    /// Fallback tiers.
    pub tiers: TiersMetrics,
    /// Config reloads.
    pub reload: ReloadMetrics,
    /// Replicas, gutters, shadows.
    pub routing: RoutingMetrics,
    /// What memcached's `stats` counts from (`stats reset`).
    pub stats_baseline: StatsBaseline,
}

impl Metrics {
    /// Creates and registers every series. (`expect`s in the registration helpers run once at
    /// start-up on constant names; a failure is a programming error caught by the unit tests.)
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        // Process CPU, memory, open files and start time (Linux /proc).
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric name");
        let build = gauge_vec(r, "memroute_build_info", "Build information.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            client: ClientMetrics::register(r),
            backend: BackendMetrics::register(r),
            tiers: TiersMetrics::register(r),
            reload: ReloadMetrics::register(r),
            routing: RoutingMetrics::register(r),
            stats_baseline: StatsBaseline::default(),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The values of the resettable counters at the last `stats reset`: `stats` shows the
/// difference, so memcached's semantics hold while the Prometheus counters stay monotonic.
#[derive(Debug, Default)]
pub struct StatsBaseline(Mutex<HashMap<&'static str, u64>>);

impl StatsBaseline {
    /// The values at the last reset.
    pub fn get(&self) -> HashMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records `values` as the new zero.
    pub fn set(&self, values: HashMap<&'static str, u64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = values;
    }
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric name"),
    )
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    register(registry, c)
}

/// Registers a counter family with one `label` and returns the counter of each of `values`, in
/// order: for a family whose label values are all known up front (the results of one event).
fn counters<const N: usize>(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> [IntCounter; N] {
    let family = counter_vec(registry, name, help, &[label]);
    values.map(|v| family.with_label_values(&[v]))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name");
    register(registry, g)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric name"),
    )
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
        let _ = m.backend.server("127.0.0.1:11211");
        let _ = m.tiers.tier("main", 0);
        let rm = &m.routing;
        rm.replica_writes.with_label_values(&["main", "ok"]);
        rm.replica_reads.with_label_values(&["main", "hit"]);
        rm.replica_failovers.with_label_values(&["main", "error"]);
        rm.replica_disagreements.with_label_values(&["main"]);
        rm.gutter_serves.with_label_values(&["main", "read"]);
        rm.shadow_requests.with_label_values(&["main", "same"]);
        let _ = m.tiers.reshard_tier("main");
        m.tiers.reshard_copies.with_label_values(&["main", "ok"]);
        m.tiers.reshard_rings.with_label_values(&["main"]);
        m.tiers.replays.with_label_values(&["queued"]);
        m.tiers.lower_unknown.with_label_values(&["delete"]);
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
        assert_eq!(ours, 35, "families: {names:?}");
    }
}
