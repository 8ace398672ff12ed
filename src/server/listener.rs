//! Client listeners: bind, accept, admit, and follow reloads.
//!
//! Every listener of the config (`[listen] address` and each `[[listeners]]` entry) is a
//! socket, TCP or Unix, with its own accept loop, connection limit and stop signal. A reload
//! that adds a listener binds it; one that removes a listener stops it: it accepts no more
//! connections and its sessions finish what they were sent, answer it, and close (the
//! shutdown drain, for one listener). Listeners the reload keeps are not touched; their
//! sessions pick up the new routes with the new snapshot.
//!
//! Connections beyond a listener's `max_connections` are told
//! `SERVER_ERROR too many open connections` and closed, without touching anyone else.
//!
//! On a TLS listener (`[listen] tls`, or a `[[listeners]]` entry's own), a TCP session starts
//! after the TLS handshake, which runs on the session's own task under `handshake_timeout`: a
//! client that never completes it holds its connection slot no longer than that (see
//! [`crate::tls::accept`]). Unix sockets are plain.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::session;
use super::stop::{self, StopSignal, Stopper};
use super::stream::ClientStream;
use crate::backend::Lane;
use crate::config::{ListenAddress, ListenerConfig};
use crate::protocol::reply::TOO_MANY_CONNECTIONS;
use crate::state::Shared;
use crate::state::connections::{Entry, Registered};

/// A bound listening socket.
pub enum Socket {
    /// `host:port`.
    Tcp(TcpListener),
    /// `unix:/path`.
    Unix(UnixListener),
}

/// Binds one listener. A Unix socket file left behind by an earlier run is replaced (a file
/// that is not a socket is not); the new one gets the configured `mode`.
pub async fn bind(config: &ListenerConfig) -> std::io::Result<Socket> {
    match &config.address {
        ListenAddress::Tcp(address) => bind_tcp(address).await.map(Socket::Tcp),
        ListenAddress::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode))?;
            Ok(Socket::Unix(listener))
        }
    }
}

/// Connections the kernel completes and queues for `accept` (memcached's `-b` default).
/// tokio's `TcpListener::bind` asks for 128: a client storm on a busy machine then overflows
/// the queue during a scheduling hiccup of a few milliseconds, and each dropped SYN costs that
/// client a one-second retransmit.
const BACKLOG: u32 = 1024;

/// Binds a TCP listener on the first address `address` resolves to that can be bound, with
/// [`BACKLOG`] and `SO_REUSEADDR` (as memcached and `TcpListener::bind` set it).
async fn bind_tcp(address: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        let bound = socket
            .set_reuseaddr(true)
            .and_then(|()| socket.bind(addr))
            .and_then(|()| socket.listen(BACKLOG));
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Binds every listener of the config, or names the first that cannot be bound.
pub async fn bind_all(
    listeners: &[ListenerConfig],
) -> Result<Vec<(ListenerConfig, Socket)>, (ListenAddress, std::io::Error)> {
    let mut bound = Vec::with_capacity(listeners.len());
    for l in listeners {
        let socket = bind(l).await.map_err(|e| (l.address.clone(), e))?;
        bound.push((l.clone(), socket));
    }
    Ok(bound)
}

/// One running listener.
struct Running {
    /// Its current `max_connections` (a reload may change it in place).
    limit: Arc<AtomicUsize>,
    stop: Stopper,
    task: JoinHandle<()>,
}

/// Serves the bound listeners until `shutdown` turns true, binding and stopping listeners as
/// reloads add and remove them. Returns when every accept loop has ended (their sessions
/// may still be draining: see [`super::shutdown::drain`]).
pub async fn supervise(
    bound: Vec<(ListenerConfig, Socket)>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reloads = shared.reloads();
    let mut running: HashMap<ListenAddress, Running> = HashMap::new();
    for (config, socket) in bound {
        running.insert(config.address.clone(), start(config, socket, &shared));
    }
    loop {
        // The select only decides; the work is done outside it, where no borrow of the
        // shutdown channel is held across an await.
        let reloaded = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => false,
            changed = reloads.changed() => changed.is_ok(),
        };
        if !reloaded {
            break;
        }
        follow_reload(&mut running, &shared).await;
    }
    for r in running.values() {
        r.stop.stop();
    }
    for (_, r) in running {
        let _ = r.task.await;
    }
}

/// Makes the running listeners those of the current config.
async fn follow_reload(running: &mut HashMap<ListenAddress, Running>, shared: &Arc<Shared>) {
    let config = shared.snapshot().config.clone();
    let wanted: HashMap<&ListenAddress, &ListenerConfig> =
        config.listeners.iter().map(|l| (&l.address, l)).collect();
    let removed: Vec<ListenAddress> = running
        .keys()
        .filter(|a| !wanted.contains_key(a))
        .cloned()
        .collect();
    for address in removed {
        if let Some(r) = running.remove(&address) {
            tracing::info!(address = %address, "listener removed; draining its sessions");
            r.stop.stop();
        }
    }
    for (address, l) in wanted {
        if let Some(r) = running.get(address) {
            r.limit.store(l.max_connections, Ordering::Relaxed);
            continue;
        }
        match bind(l).await {
            Ok(socket) => {
                tracing::info!(address = %address, "listener added");
                running.insert(address.clone(), start(l.clone(), socket, shared));
            }
            // The rest of the config applies; the operator sees the error and can fix it
            // with another reload.
            Err(e) => {
                tracing::error!(address = %address, error = %e, "cannot bind an added listener")
            }
        }
    }
}

fn start(config: ListenerConfig, socket: Socket, shared: &Arc<Shared>) -> Running {
    let limit = Arc::new(AtomicUsize::new(config.max_connections));
    let (stop, stop_rx) = stop::channel();
    let listener = Listener {
        address: Arc::new(config.address.clone()),
        limit: limit.clone(),
        active: Arc::new(AtomicUsize::new(0)),
        shared: shared.clone(),
        stop: stop_rx,
        lane: Lane::default(),
    };
    let task = tokio::spawn(async move {
        match socket {
            Socket::Tcp(l) => listener.serve_tcp(l).await,
            Socket::Unix(l) => {
                listener.serve_unix(&l).await;
                // Nobody can connect to it any more: the path goes too.
                if let ListenAddress::Unix(path) = &config.address {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    });
    Running { limit, stop, task }
}

/// The accept side of one listener.
struct Listener {
    address: Arc<ListenAddress>,
    limit: Arc<AtomicUsize>,
    /// Sessions of this listener.
    active: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    stop: StopSignal,
    lane: Lane,
}

/// Keeps the gauges and the `stats conns` list right however a session ends.
struct ConnectionGuard {
    shared: Arc<Shared>,
    active: Arc<AtomicUsize>,
    _registered: Registered,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.metrics.client.connections.dec();
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Listener {
    /// Accepts TCP clients until stopped.
    ///
    /// Connections the kernel has already completed when the stop comes (waiting in the listen
    /// backlog, possibly with requests sent) are taken too and served like the others:
    /// answered, then closed. Only then is the listening socket closed.
    async fn serve_tcp(mut self, listener: TcpListener) {
        let listen_addr: Arc<str> = listener
            .local_addr()
            .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}"))
            .into();
        let _listening = self.register_listening(listener.as_raw_fd(), &listen_addr);
        self.accept_until_stopped(|| listener.accept(), Listener::admit_tcp, &listen_addr)
            .await;
        for stream in accept_backlog(&listener) {
            self.admit_tcp(stream, &listen_addr);
        }
    }

    /// Accepts Unix socket clients until stopped.
    async fn serve_unix(mut self, listener: &UnixListener) {
        let listen_addr: Arc<str> = self.address.to_string().into();
        let _listening = self.register_listening(listener.as_raw_fd(), &listen_addr);
        self.accept_until_stopped(|| listener.accept(), Listener::admit_unix, &listen_addr)
            .await;
    }

    /// Hands every client `accept` yields to `admit` until the stop comes; an accept error
    /// (EMFILE and friends) backs off instead of spinning.
    async fn accept_until_stopped<S, P, A>(
        &mut self,
        mut accept: impl FnMut() -> A,
        admit: fn(&mut Listener, S, &Arc<str>),
        listen_addr: &Arc<str>,
    ) where
        A: Future<Output = std::io::Result<(S, P)>>,
    {
        let mut stop = self.stop.watch();
        loop {
            let accepted = tokio::select! {
                a = accept() => a,
                () = stop.stopped() => break,
            };
            match accepted {
                Ok((stream, _peer)) => admit(self, stream, listen_addr),
                Err(e) => backoff(e).await,
            }
        }
    }

    fn register_listening(&self, fd: i32, addr: &str) -> Registered {
        self.shared.connections.register(
            fd,
            Entry {
                addr: addr.to_string(),
                listen_addr: None,
            },
        )
    }

    /// True (and counted) when this listener is full.
    fn over_limit(&self) -> bool {
        let full = self.active.load(Ordering::Relaxed) >= self.limit.load(Ordering::Relaxed);
        if full {
            self.shared.metrics.client.connections_refused.inc();
        }
        full
    }

    /// Counts a new session and registers it for `stats conns`.
    fn guard(&mut self, fd: i32, peer: String, listen_addr: &Arc<str>) -> (ConnectionGuard, Lane) {
        self.shared.metrics.client.connections.inc();
        self.shared.metrics.client.connections_total.inc();
        self.active.fetch_add(1, Ordering::Relaxed);
        self.lane = self.lane.next();
        let registered = self.shared.connections.register(
            fd,
            Entry {
                addr: peer,
                listen_addr: Some(listen_addr.clone()),
            },
        );
        let guard = ConnectionGuard {
            shared: self.shared.clone(),
            active: self.active.clone(),
            _registered: registered,
        };
        (guard, self.lane)
    }

    /// Starts a session for a new TCP client, or refuses it over `max_connections`.
    fn admit_tcp(&mut self, mut stream: TcpStream, listen_addr: &Arc<str>) {
        // The certificates of the moment: a reload or new files apply to the next connection.
        let tls = self
            .shared
            .snapshot()
            .listen_tls
            .get(&self.address)
            .cloned();
        if self.over_limit() {
            tokio::spawn(async move {
                // A TLS client could not read a plain line (and a handshake would cost what
                // the limit is there to save): it is just closed.
                if tls.is_none() {
                    let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
                }
                let _ = stream.shutdown().await;
            });
            return;
        }
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "tcp:?".to_string(), |a| format!("tcp:{a}"));
        let (guard, lane) = self.guard(stream.as_raw_fd(), peer, listen_addr);
        match tls {
            None => self.spawn_session(stream, guard, lane),
            Some(acceptor) => self.spawn_tls_session(stream, acceptor, guard, lane),
        }
    }

    /// Starts a session that first completes a TLS handshake. A task of its own: the
    /// handshake's state (rustls keeps kilobytes inline) and the TLS session are part of
    /// its future, and in a task shared with plain sessions every plain client would carry
    /// their size too (3,240 bytes instead of the session's 1,024).
    fn spawn_tls_session(
        &self,
        stream: TcpStream,
        acceptor: Arc<crate::tls::Acceptor>,
        guard: ConnectionGuard,
        lane: Lane,
    ) {
        let shutdown = self.stop.watch();
        let address = self.address.clone();
        tokio::spawn(async move {
            let shared = guard.shared.clone();
            if let Some(stream) = acceptor.accept(stream, &shared.metrics).await {
                session::run(stream, shared, lane, shutdown, address).await;
            }
            drop(guard);
        });
    }

    /// Starts a session for a new Unix socket client, or refuses it over `max_connections`.
    fn admit_unix(&mut self, mut stream: UnixStream, listen_addr: &Arc<str>) {
        if self.over_limit() {
            tokio::spawn(async move {
                let _ = stream.write_all(TOO_MANY_CONNECTIONS).await;
                let _ = stream.shutdown().await;
            });
            return;
        }
        let peer = format!("unix:{}", listen_addr.trim_start_matches("unix:"));
        let (guard, lane) = self.guard(stream.as_raw_fd(), peer, listen_addr);
        self.spawn_session(stream, guard, lane);
    }

    fn spawn_session<S: ClientStream>(&self, stream: S, guard: ConnectionGuard, lane: Lane) {
        let shutdown = self.stop.watch();
        let address = self.address.clone();
        tokio::spawn(async move {
            session::run(stream, guard.shared.clone(), lane, shutdown, address).await;
            drop(guard);
        });
    }
}

/// EMFILE and friends: back off instead of spinning.
async fn backoff(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(20)).await;
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
