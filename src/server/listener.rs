//! Accept loop. Connections beyond `max_connections` are told
//! `SERVER_ERROR too many open connections` and closed, without touching anyone else.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::session;
use crate::protocol::reply::TOO_MANY_CONNECTIONS;
use crate::runtime::Shared;

/// Keeps the connection gauge right however a session ends.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

/// Serves clients until `shutdown` turns true; sessions then finish their in-flight requests.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown.clone();
    let mut lane: usize = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (mut stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let max = shared.snapshot().config.listen.max_connections;
        if shared.metrics.connections.get() >= max as i64 {
            shared.metrics.connections_refused.inc();
            tokio::spawn(async move {
                let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        shared.metrics.connections.inc();
        shared.metrics.connections_total.inc();
        lane = lane.wrapping_add(1);
        let guard = ConnectionGuard(shared.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            session::run(stream, guard.0.clone(), lane, shutdown).await;
            drop(guard);
        });
    }
}
