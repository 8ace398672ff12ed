//! One memcached server: its shared connections and its health.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::BackendError;
use super::conn::{self, Job, Reply, Target};
use super::health::Health;
use crate::metrics::ServerMetrics;
use crate::protocol::command::Op;

/// Settings that, when equal, let a reload keep a server's connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    /// `host:port` as written.
    pub address: String,
    /// Connections to keep open.
    pub connections: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Failures before marking down.
    pub failure_limit: u32,
    /// Time spent down before a retry.
    pub retry_timeout: Duration,
    /// Merge adjacent retrievals into one command.
    pub merge_gets: bool,
    /// TLS to the server (the pool's `tls`).
    pub tls: Option<crate::tls::BackendTls>,
    /// Longest value accepted from the server (the listener's `max_value_size`).
    pub max_value_size: usize,
}

/// A backend server shared by every pool (and config snapshot) that lists it.
pub struct Server {
    /// `host:port` as written.
    pub address: String,
    /// Its health.
    pub health: Arc<Health>,
    /// Its metric handles.
    pub metrics: ServerMetrics,
    conns: Vec<mpsc::UnboundedSender<Job>>,
    timeout: Duration,
}

/// A request sent to a server whose answer is still to come.
pub struct Pending(oneshot::Receiver<Reply>);

impl Pending {
    /// Waits for the answer (the connection enforces the deadline).
    pub async fn wait(self) -> Reply {
        self.0.await.unwrap_or(Err(BackendError::Closed))
    }
}

impl Server {
    /// Starts the server's connections (over TLS with `tls`, the pool's connector). Must run
    /// inside the tokio runtime.
    pub fn start(
        key: &ServerKey,
        metrics: ServerMetrics,
        tls: Option<Arc<crate::tls::Connector>>,
    ) -> Server {
        let health = Arc::new(Health::new(
            &key.address,
            key.failure_limit,
            key.retry_timeout,
        ));
        let target = Target {
            address: key.address.clone(),
            timeout: key.timeout,
            health: health.clone(),
            metrics: metrics.clone(),
            merge_gets: key.merge_gets,
            tls: tls.map(|c| Arc::new(crate::tls::connect::ServerTls::new(c, &key.address))),
            max_value_size: key.max_value_size,
        };
        let conns = (0..key.connections.max(1))
            .map(|_| conn::spawn(target.clone()))
            .collect();
        Server {
            address: key.address.clone(),
            health,
            metrics,
            conns,
            timeout: key.timeout,
        }
    }

    /// Queues `op` on connection `lane % connections`; a client always uses the same lane, so its
    /// requests to one server are answered in the order it sent them. Fails at once while the
    /// server is marked down.
    pub fn send(&self, lane: usize, op: Op) -> Result<Pending, BackendError> {
        if self.health.is_down() {
            self.metrics.fast_fails.inc();
            return Err(BackendError::Down);
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            op,
            tx,
            deadline: Instant::now() + self.timeout,
        };
        self.conns[lane % self.conns.len()]
            .send(job)
            .map_err(|_| BackendError::Closed)?;
        Ok(Pending(rx))
    }

    /// Sends `op` and waits for the answer.
    pub async fn call(&self, lane: usize, op: Op) -> Reply {
        self.send(lane, op)?.wait().await
    }
}
