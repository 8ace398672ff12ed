//! Watching a file for changes: file-system events on every directory on the way to its contents,
//! and `SIGHUP`, turned into debounced [`Trigger`]s. The config reload and the TLS certificates
//! both follow their files with it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

mod debounce;
pub use debounce::Debounce;

/// However often the file changes, what it holds is applied at most this long after the first
/// change since the last reload (plus the quiet time's own check): a file rewritten every 100 ms
/// is reloaded at least once a second instead of never.
pub const MAX_RELOAD_DELAY: Duration = Duration::from_millis(800);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file (or a symlink leading to it) changed, and then stayed quiet for the debounce time.
    FileChanged,
    /// `SIGHUP`.
    Signal,
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

/// Watches `path` and sends a [`Trigger`] once file events have been quiet for `debounce` (or, for
/// a file that keeps changing, [`MAX_RELOAD_DELAY`] after the first change; see [`Debounce`]), and
/// at once on `SIGHUP`. Must be called inside a tokio runtime; stops when the receiver is dropped.
///
/// **Directories** are watched, not the file: editors write a new file and rename it over the
/// old one, and Kubernetes updates a ConfigMap by swapping the `..data` symlink, and neither
/// touches the inode a file watch would hold. The directories are those of every entry on the
/// way to the file's contents ([`resolution`]): `path` itself, each symlink met while resolving
/// it, in whatever directory it lives (`/etc/memroute.toml -> /srv/app/current/memroute.toml`
/// with `current -> releases/42` is a deploy tool's layout), and the file finally read. Events
/// count only for those entries, and the set is recomputed after each event, because a swapped
/// link changes it.
pub fn spawn_watcher(
    path: &Path,
    debounce: Duration,
) -> Result<mpsc::Receiver<Trigger>, WatchError> {
    // Absolute, so a relative path's parent is never "" and symlinks resolve from the right place.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // notify calls this on its own thread; an unbounded send never blocks it.
    let watcher = notify::recommended_watcher(move |event| {
        let _ = events_tx.send(event);
    });
    let home = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let mut watches = Watches {
        watcher: watcher.map_err(|source| WatchError::Notify {
            dir: home.clone(),
            source,
        })?,
        // Canonical, like every directory `resolution` names, so event paths compare equal.
        home: std::fs::canonicalize(&home).unwrap_or(home),
        dirs: HashSet::new(),
    };
    // The directory holding `path` must be watchable; the others are followed as they come.
    let home = watches.home.clone();
    watches
        .watcher
        .watch(&home, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            dir: home.clone(),
            source,
        })?;
    watches.dirs.insert(home);
    let mut entries = resolution(&path);
    watches.follow(&entries);
    // Installed before returning, so a SIGHUP right after this call is never fatal.
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    // One pending trigger is enough: a reload reads whatever the file holds by then.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut timer = Debounce::new(debounce, MAX_RELOAD_DELAY);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) => {
                        if !may_change(&event) {
                            continue;
                        }
                        watches.forget_removed(&event);
                        let now = resolution(&path);
                        // Before or after the event: a swap changes the entries.
                        let hit = event.need_rescan()
                            || event.paths.iter().any(|p| entries.contains(p) || now.contains(p));
                        watches.follow(&now);
                        entries = now;
                        if hit {
                            timer.event(Instant::now());
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, path = %path.display(), "config watcher error"),
                    None => break,
                },
                Some(()) = hup.recv() => {
                    if !send(&tx, Trigger::Signal) {
                        break;
                    }
                }
                () = wait_until(timer.due()) => {
                    timer.fired();
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

/// The directory watches of [`spawn_watcher`] (they live as long as `watcher`).
struct Watches {
    watcher: notify::RecommendedWatcher,
    /// The directory holding the config path, always watched.
    home: PathBuf,
    /// Directories watched now.
    dirs: HashSet<PathBuf>,
}

impl Watches {
    /// Watches the directory of every entry and drops watches no entry needs any more. A
    /// directory that cannot be watched (a link to nowhere yet) is tried again after each event.
    fn follow(&mut self, entries: &HashSet<PathBuf>) {
        let wanted: HashSet<PathBuf> = entries
            .iter()
            .filter_map(|e| e.parent().map(Path::to_path_buf))
            .chain([self.home.clone()])
            .collect();
        for dir in wanted.difference(&self.dirs.clone()) {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching for config changes");
                    self.dirs.insert(dir.clone());
                }
                Err(e) => debug!(dir = %dir.display(), error = %e, "cannot watch yet"),
            }
        }
        for dir in self.dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
            // It may be gone already, and its watch with it.
            let _ = self.watcher.unwatch(&dir);
            self.dirs.remove(&dir);
        }
    }

    /// A watched directory that was deleted lost its watch; a new one of that name needs one.
    fn forget_removed(&mut self, event: &Event) {
        if let EventKind::Remove(_) = event.kind {
            for p in &event.paths {
                if *p != self.home {
                    self.dirs.remove(p);
                }
            }
        }
    }
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

/// Whether `event` is of a kind that can change a file: opening and reading (our own reloads
/// included) change nothing.
fn may_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(kind) => kind == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// The directory entries whose change can change what `path` reads, as full paths under
/// canonical directories (the form watch events report): each symlink met while resolving
/// `path`, at any depth and in any directory, and the entry finally read. For a ConfigMap mount,
/// `config.toml -> ..data/config.toml` and `..data -> ..2026_x`, that is `config.toml`, `..data`
/// and `..2026_x/config.toml`. Entries that do not exist yet are included: creating them is a
/// change.
pub(crate) fn resolution(path: &Path) -> HashSet<PathBuf> {
    /// Like the kernel's limit, so a symlink loop ends.
    const MAX_LINKS: usize = 40;
    /// Pushes `p`'s components onto `todo` so that they pop in order.
    fn push(todo: &mut Vec<OsString>, p: &Path) {
        for c in p.components().rev() {
            match c {
                Component::Normal(name) => todo.push(name.to_os_string()),
                Component::ParentDir => todo.push(OsString::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    }
    let mut entries = HashSet::new();
    let mut todo = Vec::new();
    push(&mut todo, path);
    // The directory resolved so far: no symlinks, no `..`.
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        let entry = at.join(&name);
        match std::fs::read_link(&entry) {
            Ok(target) if links < MAX_LINKS => {
                links += 1;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                push(&mut todo, &target);
                entries.insert(entry);
            }
            _ => {
                if todo.is_empty() {
                    entries.insert(entry.clone());
                }
                at = entry;
            }
        }
    }
    entries
}
