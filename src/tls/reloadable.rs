//! Certificates that change without a restart.
//!
//! A [`Reloadable`] holds the rustls config built from one TLS setting behind an `ArcSwap`: a
//! new connection loads the current one, an established connection keeps the one it was made
//! with (rustls keeps it in the connection), so replacing the files never breaks a connection.
//! It is rebuilt
//! - when a config reload keeps the same setting ([`Registry`] hands out the existing one and
//!   re-reads its files),
//! - on `SIGHUP`, and when one of its files changes: each file is watched like the config file
//!   ([`crate::watch::spawn_watcher`]: directories, so editors' renames, `cp` over the
//!   file and Kubernetes Secret symlink swaps are all seen), debounced, so a certificate and key
//!   written one after the other are read together.
//!
//! A rebuild that fails (a half-written file, a key that does not match the certificate yet)
//! is logged and the previous certificates stay in use; the next change tries again.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, oneshot};

use super::build::{self, Built};
use super::burst::BurstLog;
use super::{BackendTls, ListenTls, TlsError};

/// Quiet time after a file event before the files are read (as for the config file).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A rustls config built from the setting `C`, rebuilt when its files change.
pub struct Reloadable<C, T> {
    config: C,
    build: fn(&C) -> Result<Built<T>, TlsError>,
    current: ArcSwapOption<T>,
    /// The file contents `current` was built from.
    contents: Mutex<Option<Vec<Vec<u8>>>>,
    /// Handshake failures of connections using it (client side).
    pub(super) burst: BurstLog,
    /// Dropped with this value, which stops its file watcher.
    _stop: Option<oneshot::Sender<()>>,
}

impl<C: std::fmt::Debug, T> Reloadable<C, T> {
    /// Builds it from `config` now; when that fails it holds nothing (and refuses handshakes)
    /// until a file change lets it build. Validation has read the files just before, so this
    /// fails only if they changed in between.
    fn load(
        config: C,
        build: fn(&C) -> Result<Built<T>, TlsError>,
        stop: Option<oneshot::Sender<()>>,
    ) -> Reloadable<C, T> {
        let r = Reloadable {
            config,
            build,
            current: ArcSwapOption::empty(),
            contents: Mutex::new(None),
            burst: BurstLog::new(),
            _stop: stop,
        };
        r.refresh();
        r
    }

    /// The setting it is built from.
    pub fn config(&self) -> &C {
        &self.config
    }

    /// The current rustls config, if its files ever loaded.
    pub fn current(&self) -> Option<Arc<T>> {
        self.current.load_full()
    }

    /// Reads the files again and, if they changed and are valid, makes new connections use
    /// them. True if new certificates are in use now.
    pub fn refresh(&self) -> bool {
        match (self.build)(&self.config) {
            Ok(built) => {
                let mut contents = self.contents.lock().unwrap_or_else(|e| e.into_inner());
                if contents.as_ref() == Some(&built.contents) {
                    return false;
                }
                let first = contents.is_none();
                *contents = Some(built.contents);
                self.current.store(Some(built.config));
                if !first {
                    tracing::info!(tls = ?self.config, "TLS certificates reloaded; new connections use them");
                }
                true
            }
            Err(e) => {
                if self.current.load().is_some() {
                    tracing::error!(error = %e, "TLS certificates not reloaded; the previous ones stay in use");
                } else {
                    tracing::error!(error = %e, "TLS certificates cannot be loaded; TLS handshakes are refused until they can");
                }
                false
            }
        }
    }
}

/// The client-side acceptor of `[listen] tls`.
pub type ListenCerts = Reloadable<ListenTls, rustls::ServerConfig>;
/// The backend-side connector of a pool's `tls`.
pub type BackendCerts = Reloadable<BackendTls, rustls::ClientConfig>;

/// One [`Reloadable`] per distinct setting, shared by every snapshot that uses it, so a reload
/// that keeps the setting keeps the watcher and re-reads the files instead of starting over.
#[derive(Default)]
pub struct Registry {
    listen: Mutex<HashMap<ListenTls, Weak<ListenCerts>>>,
    backend: Mutex<HashMap<BackendTls, Weak<BackendCerts>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The acceptor for `tls`, re-read if it already existed.
    pub fn listen(&self, tls: &ListenTls) -> Arc<ListenCerts> {
        get_or_start(&self.listen, tls, tls.files(), build::server_config)
    }

    /// The connector for `tls`, re-read if it already existed.
    pub fn backend(&self, tls: &BackendTls) -> Arc<BackendCerts> {
        get_or_start(&self.backend, tls, tls.files(), build::client_config)
    }
}

fn get_or_start<C, T>(
    table: &Mutex<HashMap<C, Weak<Reloadable<C, T>>>>,
    config: &C,
    files: Vec<PathBuf>,
    build: fn(&C) -> Result<Built<T>, TlsError>,
) -> Arc<Reloadable<C, T>>
where
    C: Clone + Eq + Hash + std::fmt::Debug + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    table.retain(|_, w| w.strong_count() > 0);
    if let Some(existing) = table.get(config).and_then(Weak::upgrade) {
        // A config reload re-reads the certificates even when no file event was seen.
        existing.refresh();
        return existing;
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    let r = Arc::new(Reloadable::load(config.clone(), build, Some(stop_tx)));
    if tokio::runtime::Handle::try_current().is_ok() {
        watch(Arc::downgrade(&r), files, stop_rx);
    }
    table.insert(config.clone(), Arc::downgrade(&r));
    r
}

/// Refreshes `r` whenever one of `files` changes or `SIGHUP` comes, until `r` is dropped.
fn watch<C, T>(r: Weak<Reloadable<C, T>>, files: Vec<PathBuf>, mut stop: oneshot::Receiver<()>)
where
    C: std::fmt::Debug + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    let (tx, mut rx) = mpsc::channel::<()>(1);
    for file in files {
        let mut triggers = match crate::watch::spawn_watcher(&file, DEBOUNCE) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot watch a TLS file; it is re-read on config reload and SIGHUP only");
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    t = triggers.recv() => match t {
                        // A full channel already holds a refresh, which reads every file.
                        Some(_) => { let _ = tx.try_send(()); }
                        None => break,
                    },
                    () = tx.closed() => break,
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        // No file could be watched.
                        let _ = (&mut stop).await;
                        break;
                    }
                    let Some(r) = r.upgrade() else { break };
                    // A few small PEM files: read on this task, as the config file is.
                    r.refresh();
                }
                _ = &mut stop => break,
            }
        }
    });
}
