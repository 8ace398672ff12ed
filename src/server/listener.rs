//! Accept loop. Connections beyond `max_connections` are told
//! `SERVER_ERROR too many open connections` and closed, without touching anyone else.
//!
//! With `[listen] tls`, a session starts after the TLS handshake, which runs on the session's
//! own task under `handshake_timeout`: a client that never completes it holds its connection
//! slot no longer than that (see [`crate::tls::accept`]).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::connections::{Entry, Registered};
use super::session;
use crate::protocol::reply::TOO_MANY_CONNECTIONS;
use crate::runtime::Shared;

/// Keeps the connection gauge and the `stats conns` list right however a session ends.
struct ConnectionGuard(Arc<Shared>, #[allow(dead_code)] Registered);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
    }
}

/// Serves clients until `shutdown` turns true; sessions then finish their in-flight requests.
///
/// Connections the kernel has already completed when shutdown comes (waiting in the listen
/// backlog, possibly with requests sent) are taken too and served like the others: answered,
/// then closed. Only then is the listening socket closed.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown.clone();
    let mut lane: usize = 0;
    let listen_addr = listener
        .local_addr()
        .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}"));
    let _listening = shared.connections.register(
        listener.as_raw_fd(),
        Entry {
            addr: listen_addr.clone(),
            listen_addr: None,
        },
    );
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, _peer)) => admit(stream, &shared, &mut lane, &shutdown, &listen_addr),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for stream in accept_backlog(&listener) {
        admit(stream, &shared, &mut lane, &shutdown, &listen_addr);
    }
}

/// Starts a session for a new client, or refuses it over `max_connections`.
fn admit(
    mut stream: TcpStream,
    shared: &Arc<Shared>,
    lane: &mut usize,
    shutdown: &watch::Receiver<bool>,
    listen_addr: &str,
) {
    let snapshot = shared.snapshot();
    let max = snapshot.config.listen.max_connections;
    // The certificates of the moment: a reload or new files apply to the next connection.
    let tls = snapshot.listen_tls.clone();
    drop(snapshot);
    if shared.metrics.connections.get() >= max as i64 {
        shared.metrics.connections_refused.inc();
        tokio::spawn(async move {
            // A TLS client could not read a plain line (and a handshake would cost what the
            // limit is there to save): it is just closed.
            if tls.is_none() {
                let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
            }
            let _ = stream.shutdown().await;
        });
        return;
    }
    let _ = stream.set_nodelay(true);
    shared.metrics.connections.inc();
    shared.metrics.connections_total.inc();
    *lane = lane.wrapping_add(1);
    let lane = *lane;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}"));
    let registered = shared.connections.register(
        stream.as_raw_fd(),
        Entry {
            addr: peer,
            listen_addr: Some(listen_addr.to_string()),
        },
    );
    let guard = ConnectionGuard(shared.clone(), registered);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        match tls {
            None => session::run(stream, guard.0.clone(), lane, shutdown).await,
            Some(acceptor) => {
                if let Some(stream) = acceptor.accept(stream, &guard.0.metrics).await {
                    session::run(stream, guard.0.clone(), lane, shutdown).await;
                }
            }
        }
        drop(guard);
    });
}

/// Most connections taken from the backlog at shutdown.
const BACKLOG_LIMIT: usize = 4096;

/// Accepts, without waiting, the connections already queued on `listener`.
///
/// Through a duplicate of the descriptor, as in the session's final read: tokio's `accept`
/// would only see them once its reactor has processed the readiness event.
fn accept_backlog(listener: &TcpListener) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    let Ok(fd) = listener.as_fd().try_clone_to_owned() else {
        return streams;
    };
    // Shares the open file description, so it is non-blocking like tokio's.
    let queue = std::net::TcpListener::from(fd);
    while streams.len() < BACKLOG_LIMIT {
        let Ok((stream, _)) = queue.accept() else {
            break;
        };
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        match stream {
            Ok(s) => streams.push(s),
            Err(e) => tracing::warn!(error = %e, "cannot serve a queued connection"),
        }
    }
    streams
}
