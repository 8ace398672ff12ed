//! Graceful shutdown: the first SIGTERM or SIGINT stops the listener and lets every session
//! answer what it already read; a second signal, or the drain timeout, ends the process at once.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::state::Shared;

/// SIGTERM and SIGINT listeners.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn first(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

/// Waits until every client session has ended, at most `timeout`, or until a second signal.
pub async fn drain(shared: &Shared, signals: &mut Signals, timeout: Duration) {
    let wait = async {
        while shared.metrics.client.connections.get() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = wait => tracing::info!("all clients drained"),
        _ = tokio::time::sleep(timeout) => tracing::warn!(open = shared.metrics.client.connections.get(), "drain timeout; closing"),
        _ = signals.first() => tracing::warn!("second signal; exiting now"),
    }
}
