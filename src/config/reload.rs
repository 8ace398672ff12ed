//! Hot reload (DESIGN §5): notice that the config changed, load and validate it off the request
//! path, hand a valid snapshot to the runtime, and keep the old one when the new file is bad.
//!
//! Three pieces, so each can be used and tested alone:
//! - [`crate::watch::spawn_watcher`] turns file-system events and `SIGHUP` into debounced
//!   [`Trigger`]s;
//! - [`Reloader`] reads the file, skips it when the text is unchanged, validates it;
//! - [`reload_loop`] runs one on the other and reports each [`ReloadOutcome`].
//!
//! ```no_run
//! # use std::time::Duration;
//! # use memroute::config::reload::{reload_loop, Reloader};
//! # use memroute::watch::spawn_watcher;
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

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tracing::{debug, error, info};

use super::{Config, ConfigErrors};
use crate::watch::Trigger;

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
        if trigger == Trigger::Signal && outcome == ReloadOutcome::Unchanged {
            // An operator who sent SIGHUP wants to see that it arrived; a file event with the
            // same text (an editor's touch) stays at debug level.
            info!(path = %reloader.path.display(), digest = %reloader.digest, "SIGHUP: config unchanged, nothing to reload");
        }
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
