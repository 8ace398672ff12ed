//! Hot reload (DESIGN §5): notice that the config changed, load and validate it off the request
//! path, hand a valid snapshot to the runtime, and keep the old one when the new file is bad.
//!
//! Three pieces, so each can be used and tested alone:
//! - [`spawn_watcher`] turns file-system events and `SIGHUP` into debounced [`Trigger`]s;
//! - [`Reloader`] reads the file, skips it when the text is unchanged, validates it;
//! - [`reload_loop`] runs one on the other and reports each [`ReloadOutcome`].
//!
//! ```no_run
//! # use std::time::Duration;
//! # use memroute::config::reload::{reload_loop, spawn_watcher, Reloader};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let path = std::path::PathBuf::from("memroute.toml");
//! // Watch before the first load, so a change made while loading is not missed.
//! let triggers = spawn_watcher(&path, Duration::from_millis(200))?;
//! let (reloader, config) = Reloader::load(&path)?;
//! # let _ = config;
//! tokio::spawn(reload_loop(reloader, triggers, |_new, _digest| { /* store in the ArcSwap */ }, |_outcome| {
//!     /* count success / failure */
//! }));
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::{Config, ConfigErrors};

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file (or a symlink leading to it) changed, and then stayed quiet for the debounce time.
    FileChanged,
    /// `SIGHUP`.
    Signal,
}

/// What one reload did; the metrics layer counts these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new valid config was handed to the runtime.
    Applied {
        /// MD5 of the new file's text, as `md5sum` prints it (for `/config`).
        digest: String,
    },
    /// The text is the one already running: nothing to do.
    Unchanged,
    /// The file cannot be read or is invalid; the running config stays.
    Rejected(ConfigErrors),
}

/// The watcher could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory holding the config cannot be watched.
    #[error("cannot watch {}: {source}", dir.display())]
    Notify {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// The `SIGHUP` handler cannot be installed.
    #[error("cannot handle SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
}

/// Watches `path` and sends a [`Trigger`] once file events have been quiet for `debounce`, and at
/// once on `SIGHUP`. Must be called inside a tokio runtime; stops when the receiver is dropped.
///
/// The **parent directory** is watched, not the file: editors write a new file and rename it
/// over the old one, and Kubernetes updates a ConfigMap by swapping the `..data` symlink, and
/// neither touches the inode a file watch would hold. Events are kept only for the names that can
/// change what `path` resolves to: the file itself and the symlinks on its way in that directory.
pub fn spawn_watcher(
    path: &Path,
    debounce: Duration,
) -> Result<mpsc::Receiver<Trigger>, WatchError> {
    // Absolute, so a relative path's parent is never "" and symlinks resolve from the right place.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // notify calls this on its own thread; an unbounded send never blocks it.
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = events_tx.send(event);
    })
    .map_err(|source| WatchError::Notify {
        dir: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            dir: dir.clone(),
            source,
        })?;
    // Installed before returning, so a SIGHUP right after this call is never fatal.
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    // One pending trigger is enough: a reload reads whatever the file holds by then.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _watcher = watcher; // the watch lives as long as this task
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) if affects(&event, &path, &dir) => {
                        due = Some(Instant::now() + debounce);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => warn!(error = %e, dir = %dir.display(), "config watcher error"),
                    None => break,
                },
                Some(()) = hup.recv() => {
                    if !send(&tx, Trigger::Signal) {
                        break;
                    }
                }
                () = wait_until(due) => {
                    due = None;
                    if !send(&tx, Trigger::FileChanged) {
                        break;
                    }
                }
                () = tx.closed() => break,
            }
        }
    });
    Ok(rx)
}

/// False once nobody listens. A full channel already holds a trigger, which is as good.
fn send(tx: &mpsc::Sender<Trigger>, trigger: Trigger) -> bool {
    !matches!(
        tx.try_send(trigger),
        Err(mpsc::error::TrySendError::Closed(_))
    )
}

async fn wait_until(due: Option<Instant>) {
    match due {
        Some(due) => sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Whether `event` (in `dir`) can change what `path` reads.
fn affects(event: &Event, path: &Path, dir: &Path) -> bool {
    if event.need_rescan() {
        return true; // events were lost: assume the worst
    }
    // Opening and reading (our own reloads included) change nothing.
    if let EventKind::Access(kind) = event.kind {
        if kind != AccessKind::Close(AccessMode::Write) {
            return false;
        }
    }
    let names = watched_names(path, dir);
    event
        .paths
        .iter()
        .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
}

/// The entries of `dir` on the way to `path`'s contents: the file and, through symlinks, the
/// first component of each link target inside `dir`. For a ConfigMap mount that is
/// `config.toml -> ..data/config.toml`, so `..data`, the link that the kubelet swaps.
/// Recomputed per event, because a swap changes the chain.
fn watched_names(path: &Path, dir: &Path) -> HashSet<OsString> {
    /// Like the kernel's limit, so a symlink loop ends.
    const MAX_LINKS: usize = 40;
    let mut names: HashSet<OsString> = path.file_name().map(OsString::from).into_iter().collect();
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&current) else {
            break;
        };
        let next = current.parent().unwrap_or(dir).join(target);
        if let Some(Component::Normal(first)) = next
            .strip_prefix(dir)
            .ok()
            .and_then(|rest| rest.components().next())
        {
            names.insert(first.to_os_string());
        }
        current = next;
    }
    names
}

/// Loads the config file again on demand, remembering the text that is running.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    digest: String,
}

impl Reloader {
    /// The first load: reads and validates `path` and remembers its text.
    pub fn load(path: impl Into<PathBuf>) -> Result<(Reloader, Config), ConfigErrors> {
        let path = path.into();
        let text = read(&path)?;
        let config = Config::parse(&text, &path.display().to_string())?;
        Ok((
            Reloader {
                digest: digest(&text),
                path,
            },
            config,
        ))
    }

    /// The file this reloader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// MD5 (hex) of the running config's text.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Reads the file again; calls `apply` with the new config (and its digest) only when the text changed and
    /// is valid. Logs the result: rejected files get one `error!` line per problem.
    pub fn reload(&mut self, apply: impl FnOnce(Config, &str)) -> ReloadOutcome {
        let file = self.path.display().to_string();
        let parsed = read(&self.path).and_then(|text| {
            let digest = digest(&text);
            if digest == self.digest {
                return Ok(None);
            }
            Config::parse(&text, &file).map(|config| Some((config, digest)))
        });
        match parsed {
            Ok(None) => {
                debug!(path = %file, digest = %self.digest, "config unchanged, not reloaded");
                ReloadOutcome::Unchanged
            }
            Ok(Some((config, digest))) => {
                apply(config, &digest);
                info!(path = %file, digest = %digest, "config reloaded");
                self.digest.clone_from(&digest);
                ReloadOutcome::Applied { digest }
            }
            Err(errors) => {
                for e in &errors.0 {
                    error!(path = %file, "config rejected: {e}");
                }
                let count = errors.0.len();
                error!(path = %file, errors = count, "config rejected; the previous one keeps running");
                ReloadOutcome::Rejected(errors)
            }
        }
    }
}

/// Reloads on every trigger until the trigger channel closes. `apply` gets each new valid config
/// (store it in the runtime's `ArcSwap`); `report` sees every outcome (metrics).
///
/// Reading and parsing happen on this task, away from client connections; a config file is a
/// few kilobytes, so the blocking read is short.
pub async fn reload_loop(
    mut reloader: Reloader,
    mut triggers: mpsc::Receiver<Trigger>,
    mut apply: impl FnMut(Config, &str),
    mut report: impl FnMut(&ReloadOutcome),
) {
    while let Some(trigger) = triggers.recv().await {
        debug!(?trigger, path = %reloader.path.display(), "config reload triggered");
        let outcome = reloader.reload(&mut apply);
        report(&outcome);
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(path.display().to_string(), format!("cannot read file: {e}"))
    })
}

/// Hex MD5 of the text, comparable with `md5sum FILE`.
pub fn digest(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
