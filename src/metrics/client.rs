//! The client side: connections, requests by command, what the cache answered.

use prometheus::{Histogram, IntCounter, IntGauge, Registry};

use super::{Cmd, counter, counter_vec, counters, gauge, histogram_vec, labels};

labels! {
    /// Why a client's TLS handshake failed: the `reason` label of
    /// `memroute_client_tls_handshake_failures_total`.
    pub enum TlsFailure {
        /// No handshake within `handshake_timeout`.
        Timeout => "timeout",
        /// mTLS: the client sent no certificate.
        NoClientCertificate => "no_client_certificate",
        /// mTLS: the client's certificate does not chain to `client_ca` (or is expired, …).
        BadClientCertificate => "bad_client_certificate",
        /// The client refused the handshake with an alert (typically: it does not trust our
        /// certificate).
        ClientAlert => "client_alert",
        /// No TLS version or cipher suite in common.
        Incompatible => "incompatible",
        /// Not TLS at all (e.g. a plain memcached client on the TLS port), or malformed TLS.
        Protocol => "protocol",
        /// The client closed or reset the connection during the handshake.
        Closed => "closed",
        /// The listener has no usable certificate (its files never loaded).
        NoCertificate => "no_certificate",
        /// Anything else.
        Other => "other",
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

/// Everything counted where clients meet memroute.
pub struct ClientMetrics {
    /// `memroute_client_connections` (current).
    pub connections: IntGauge,
    /// `memroute_client_connections_total`
    pub connections_total: IntCounter,
    /// `memroute_client_connections_refused_total`
    pub connections_refused: IntCounter,
    /// `memroute_client_connections_max`: the configured `max_connections`.
    pub connections_max: IntGauge,
    cmds: Vec<CmdMetrics>,
    /// Hits and misses of the non-retrieval keyed commands.
    pub results: Results,
    /// `memroute_get_keys_total{result="hit"}`: keys found (after fallback).
    pub get_hits: IntCounter,
    /// `memroute_get_keys_total{result="miss"}`
    pub get_misses: IntCounter,
    tls_failures: Vec<IntCounter>,
}

/// The latency buckets, from a merged get on loopback to a timeout.
const LATENCY_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

impl ClientMetrics {
    pub(super) fn register(r: &Registry) -> ClientMetrics {
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
        let latency = histogram_vec(
            r,
            "memroute_request_duration_seconds",
            "Time from parsing a request to its reply being ready, by command.",
            &LATENCY_BUCKETS,
            &["command"],
        );
        let cmds = Cmd::ALL
            .iter()
            .map(|c| CmdMetrics {
                requests: requests.with_label_values(&[c.label()]),
                client_errors: errors.with_label_values(&[c.label(), "client"]),
                server_errors: errors.with_label_values(&[c.label(), "server"]),
                latency: latency.with_label_values(&[c.label()]),
            })
            .collect();
        let [get_hits, get_misses] = counters(
            r,
            "memroute_get_keys_total",
            "Keys asked for by retrieval commands, by final result after fallback tiers.",
            "result",
            ["hit", "miss"],
        );
        let tls_failures = counter_vec(
            r,
            "memroute_client_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by reason.",
            &["reason"],
        );
        ClientMetrics {
            connections: gauge(r, "memroute_client_connections", "Open client connections."),
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
            connections_max: gauge(
                r,
                "memroute_client_connections_max",
                "The configured max_connections.",
            ),
            cmds,
            results: Results::register(r),
            get_hits,
            get_misses,
            tls_failures: TlsFailure::ALL
                .iter()
                .map(|f| tls_failures.with_label_values(&[f.label()]))
                .collect(),
        }
    }

    /// Handles for one command.
    pub fn cmd(&self, cmd: Cmd) -> &CmdMetrics {
        &self.cmds[cmd as usize]
    }

    /// The counter of client TLS handshakes that failed for `why`.
    pub fn tls_failure(&self, why: TlsFailure) -> &IntCounter {
        &self.tls_failures[why as usize]
    }
}

impl Results {
    fn register(r: &Registry) -> Results {
        let results = counter_vec(
            r,
            "memroute_command_results_total",
            "Answers to delete, incr, decr, cas and touch by result (hit, miss, badval).",
            &["command", "result"],
        );
        let result = |c: Cmd, r: &str| results.with_label_values(&[c.label(), r]);
        Results {
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
        }
    }
}
