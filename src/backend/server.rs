//! One memcached server: its shared connections, its health, and the prober that finds out when
//! a server marked down is back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{self, Answer, Job, Target};
use super::error::{BackendError, ErrorKind, Origin};
use super::health::{Health, now_ms};
use super::settings::ServerSettings;
use crate::metrics::ServerMetrics;
use crate::protocol::backend::Response;
use crate::protocol::command::{Op, Retrieval};

/// Which of a server's `connections` a client session's requests go over.
///
/// The listener gives every new session the next lane, and the session passes it with each
/// request down to [`Server::send`], which queues the request on connection
/// `lane % connections`. So one client's requests to one server share one pipelined connection
/// and are answered in the order it sent them (memcached answers a connection in order), while
/// different clients spread over the server's connections. Background work (replays) uses
/// [`Lane::default`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lane(usize);

impl Lane {
    /// The lane after this one (wraps around).
    pub fn next(self) -> Lane {
        Lane(self.0.wrapping_add(1))
    }

    /// The index of this lane's connection among `connections` (at least one is assumed).
    fn connection(self, connections: usize) -> usize {
        self.0 % connections.max(1)
    }
}

/// A backend server shared by every pool (and config snapshot) that lists it.
pub struct Server {
    /// Its settings, shared with its connections and its health.
    pub settings: Arc<ServerSettings>,
    /// Its health.
    pub health: Arc<Health>,
    /// Its metric handles.
    pub metrics: ServerMetrics,
    conns: Vec<mpsc::UnboundedSender<Job>>,
    prober: JoinHandle<()>,
}

/// A request sent to a server whose answer is still to come.
pub struct Pending(oneshot::Receiver<Answer>);

impl Pending {
    /// Waits for the answer (the connection enforces the deadline).
    pub async fn wait(self) -> Answer {
        // The sender is only dropped unanswered when its connection task panicked.
        self.0.await.unwrap_or_else(|_| {
            Err(BackendError::new(ErrorKind::Closed, Origin::Task).written(true))
        })
    }
}

impl Server {
    /// Starts the server's connections (over TLS with `tls`, the pool's connector) and its
    /// prober. Must run inside the tokio runtime.
    pub fn start(
        settings: Arc<ServerSettings>,
        metrics: ServerMetrics,
        tls: Option<Arc<crate::tls::Connector>>,
    ) -> Server {
        let health = Arc::new(Health::new(settings.clone()));
        let target = Target {
            settings: settings.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            tls: tls.map(|c| Arc::new(crate::tls::connect::ServerTls::new(c, &settings.address))),
        };
        let conns: Vec<_> = (0..settings.connections.max(1))
            .map(|_| conn::spawn(target.clone()))
            .collect();
        let prober = tokio::spawn(probe(
            settings.clone(),
            health.clone(),
            conns[0].downgrade(),
            metrics.clone(),
        ));
        Server {
            settings,
            health,
            metrics,
            conns,
            prober,
        }
    }

    /// `host:port` as written.
    pub fn address(&self) -> &str {
        &self.settings.address
    }

    /// Queues `op` on the connection of `lane` (see [`Lane`]). Fails at once while the server is
    /// marked down or being probed.
    pub fn send(&self, lane: Lane, op: Op) -> Result<Pending, BackendError> {
        if self.health.is_down() {
            self.metrics.fast_fails.inc();
            return Err(BackendError::new(ErrorKind::Down, Origin::Routing));
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            op,
            tx,
            deadline: Instant::now() + self.settings.timeout,
        };
        // `conns` is never empty (at least one connection is started); `get` keeps that
        // promise out of the request path's panics.
        let conn = self.conns.get(lane.connection(self.conns.len()));
        // The supervisor holds the receiver until every sender is gone: unreachable.
        let closed = || BackendError::new(ErrorKind::Closed, Origin::Task);
        conn.ok_or_else(closed)?.send(job).map_err(|_| closed())?;
        Ok(Pending(rx))
    }

    /// Sends `op` and waits for the answer.
    pub async fn call(&self, lane: Lane, op: Op) -> Answer {
        self.send(lane, op)?.wait().await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

/// The key a probe asks for: a `get` is read-only and answered by every memcached; the miss it
/// counts in memcached's own stats is the whole footprint.
const PROBE_KEY: &[u8] = b"memroute:probe";

/// Waits for the server to be marked down, then at each retry time sends one `get` of its own
/// on the first connection: the answer marks the server up (the connection records it), a
/// failure keeps it down for another `retry_timeout`.
async fn probe(
    settings: Arc<ServerSettings>,
    health: Arc<Health>,
    conn: mpsc::WeakUnboundedSender<Job>,
    metrics: ServerMetrics,
) {
    loop {
        health.wait_down().await;
        let Some(due) = health.retry_at() else {
            continue;
        };
        let wait = Duration::from_millis(due.saturating_sub(now_ms()));
        tokio::time::sleep(wait).await;
        if health.retry_at().is_none_or(|t| t > now_ms()) {
            continue; // up again, or down for longer meanwhile
        }
        let Some(conn) = conn.upgrade() else {
            return; // the server left the config
        };
        let (tx, rx) = oneshot::channel();
        let job = Job {
            op: Op::Get {
                kind: Retrieval::Get,
                exptime: 0,
                keys: vec![Bytes::from_static(PROBE_KEY)],
            },
            tx,
            deadline: Instant::now() + settings.timeout,
        };
        if conn.send(job).is_err() {
            return;
        }
        drop(conn);
        match Pending(rx).wait().await {
            Ok(Response::Values(_)) => health.record_success(&metrics),
            Ok(answer) => {
                tracing::warn!(server = %settings.address, ?answer, "probe answered with an error");
                health.record_failure(&metrics);
            }
            Err(e) => {
                tracing::debug!(server = %settings.address, error = %e, "probe failed");
                health.record_failure(&metrics);
            }
        }
    }
}

#[cfg(test)]
mod tests;
