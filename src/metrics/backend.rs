//! The backend side: one set of handles per server, resolved when the server is created.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec};

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

/// The `kind` labels of `memroute_backend_errors_total`.
const ERROR_KINDS: [&str; 6] = ["timeout", "connect", "protocol", "closed", "down", "tls"];

/// The per-server families; [`BackendMetrics::server`] resolves one server's handles.
pub struct BackendMetrics {
    requests: IntCounterVec,
    commands: IntCounterVec,
    errors: IntCounterVec,
    up: IntGaugeVec,
    down: IntCounterVec,
    ejections: IntCounterVec,
}

impl BackendMetrics {
    pub(super) fn register(r: &Registry) -> BackendMetrics {
        let per_server = |name, help| counter_vec(r, name, help, &["server"]);
        BackendMetrics {
            requests: per_server(
                "memroute_backend_requests_total",
                "Requests sent to a backend server (each of several merged gets counts).",
            ),
            commands: per_server(
                "memroute_backend_commands_total",
                "Commands written to a backend server; adjacent gets merged into one count once.",
            ),
            errors: counter_vec(
                r,
                "memroute_backend_errors_total",
                "Backend failures by server and kind.",
                &["server", "kind"],
            ),
            up: gauge_vec(
                r,
                "memroute_server_up",
                "1 while the server is considered up, 0 while marked down.",
                &["server"],
            ),
            down: per_server(
                "memroute_server_down_total",
                "Times a server was marked down after failure_limit consecutive failures.",
            ),
            ejections: per_server(
                "memroute_server_ejections_total",
                "Times a server was taken out of a ring (eject = true).",
            ),
        }
    }

    /// Handles for one backend server (call once per server).
    pub fn server(&self, server: &str) -> ServerMetrics {
        let err = |kind| self.errors.with_label_values(&[server, kind]);
        let m = ServerMetrics {
            requests: self.requests.with_label_values(&[server]),
            commands: self.commands.with_label_values(&[server]),
            timeouts: err("timeout"),
            connect_errors: err("connect"),
            protocol_errors: err("protocol"),
            closed: err("closed"),
            fast_fails: err("down"),
            tls_errors: err("tls"),
            up: self.up.with_label_values(&[server]),
            marked_down: self.down.with_label_values(&[server]),
            ejections: self.ejections.with_label_values(&[server]),
        };
        m.up.set(1);
        m
    }

    /// Removes the series of a server that left the config.
    pub fn forget_server(&self, server: &str) {
        let _ = self.requests.remove_label_values(&[server]);
        let _ = self.commands.remove_label_values(&[server]);
        let _ = self.up.remove_label_values(&[server]);
        let _ = self.down.remove_label_values(&[server]);
        let _ = self.ejections.remove_label_values(&[server]);
        for kind in ERROR_KINDS {
            let _ = self.errors.remove_label_values(&[server, kind]);
        }
    }
}
