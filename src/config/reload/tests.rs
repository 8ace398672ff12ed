//! These use the real file system and inotify, so they run in real time with a short debounce.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::watch::{resolution, spawn_watcher};

const DEBOUNCE: Duration = Duration::from_millis(100);
/// Long enough for any event of one file operation to arrive and be debounced.
const QUIET: Duration = Duration::from_millis(600);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("memroute-reload-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

/// A fresh directory (see [`TempDir`]) holding `config.toml` with `config_text(1)`; returns the
/// directory and the file's path.
fn config_dir(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.0.join("config.toml");
    fs::write(&path, config_text(1)).unwrap();
    (dir, path)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A valid config whose only server port tells versions apart.
fn config_text(port: u16) -> String {
    format!("[pools.a]\nservers = [\"127.0.0.1:{port}\"]\n")
}

fn port_of(config: &Config) -> String {
    config.pools["a"].servers[0].address.clone()
}

/// Outcomes and applied configs of a running reload loop on `path`.
struct Running {
    outcomes: mpsc::UnboundedReceiver<ReloadOutcome>,
    applied: mpsc::UnboundedReceiver<Config>,
}

impl Running {
    fn start(path: &Path) -> Running {
        let triggers = spawn_watcher(path, DEBOUNCE).unwrap();
        let (reloader, _) = Reloader::load(path).unwrap();
        let (otx, outcomes) = mpsc::unbounded_channel();
        let (atx, applied) = mpsc::unbounded_channel();
        tokio::spawn(reload_loop(
            reloader,
            triggers,
            move |c, _| atx.send(c).unwrap(),
            move |o| otx.send(o.clone()).unwrap(),
        ));
        Running { outcomes, applied }
    }

    async fn next(&mut self) -> ReloadOutcome {
        timeout(Duration::from_secs(5), self.outcomes.recv())
            .await
            .expect("no reload")
            .unwrap()
    }

    /// Exactly one reload, which applied a config with server `address`.
    async fn applied_once(&mut self, address: &str) {
        let outcome = self.next().await;
        assert!(
            matches!(outcome, ReloadOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert_eq!(port_of(&self.applied.recv().await.unwrap()), address);
        self.quiet().await;
    }

    async fn quiet(&mut self) {
        if let Ok(extra) = timeout(QUIET, self.outcomes.recv()).await {
            panic!("unexpected extra reload: {extra:?}");
        }
    }
}

#[tokio::test]
async fn in_place_write_reloads_once_after_a_burst() {
    let (_dir, path) = config_dir("write");
    let mut r = Running::start(&path);
    // Several writes closer together than the debounce time are one reload.
    for port in 2..=4 {
        fs::write(&path, config_text(port)).unwrap();
        tokio::time::sleep(DEBOUNCE / 4).await;
    }
    r.applied_once("127.0.0.1:4").await;
}

#[tokio::test]
async fn rename_over_reloads_once() {
    let (dir, path) = config_dir("rename");
    let mut r = Running::start(&path);
    // What editors and config-management tools do: write a temp file, rename it over.
    let tmp = dir.0.join(".config.toml.swp");
    fs::write(&tmp, config_text(2)).unwrap();
    fs::rename(&tmp, &path).unwrap();
    r.applied_once("127.0.0.1:2").await;
}

/// The layout of a ConfigMap volume in `d` holding `config_text(1)`; returns the config path.
fn configmap_volume(d: &Path) -> PathBuf {
    fs::create_dir(d.join("..2026_1")).unwrap();
    fs::write(d.join("..2026_1/config.toml"), config_text(1)).unwrap();
    symlink("..2026_1", d.join("..data")).unwrap();
    symlink("..data/config.toml", d.join("config.toml")).unwrap();
    d.join("config.toml")
}

#[tokio::test]
async fn kubernetes_symlink_swap_reloads_once() {
    let dir = TempDir::new("k8s");
    let d = &dir.0;
    let mut r = Running::start(&configmap_volume(d));
    // The kubelet's update: new directory, new link, atomic rename over `..data`, old dir removed.
    fs::create_dir(d.join("..2026_2")).unwrap();
    fs::write(d.join("..2026_2/config.toml"), config_text(2)).unwrap();
    symlink("..2026_2", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    fs::remove_dir_all(d.join("..2026_1")).unwrap();
    r.applied_once("127.0.0.1:2").await;
}

#[tokio::test]
async fn edits_and_swaps_through_a_link_to_another_directory_reload() {
    // A deploy tool's layout: config.toml -> <other>/current/config.toml, current -> r1.
    let (home, other) = (TempDir::new("link-home"), TempDir::new("link-other"));
    let o = &other.0;
    fs::create_dir(o.join("r1")).unwrap();
    fs::write(o.join("r1/config.toml"), config_text(1)).unwrap();
    symlink("r1", o.join("current")).unwrap();
    let path = home.0.join("config.toml");
    symlink(o.join("current/config.toml"), &path).unwrap();
    let mut r = Running::start(&path);
    // The file edited where it lives.
    fs::write(o.join("r1/config.toml"), config_text(2)).unwrap();
    r.applied_once("127.0.0.1:2").await;
    // `current` swapped to a new release.
    fs::create_dir(o.join("r2")).unwrap();
    fs::write(o.join("r2/config.toml"), config_text(3)).unwrap();
    symlink("r2", o.join("current.tmp")).unwrap();
    fs::rename(o.join("current.tmp"), o.join("current")).unwrap();
    r.applied_once("127.0.0.1:3").await;
    // The new release is watched, the old one no longer matters.
    fs::write(o.join("r2/config.toml"), config_text(4)).unwrap();
    r.applied_once("127.0.0.1:4").await;
    fs::write(o.join("r1/config.toml"), config_text(5)).unwrap();
    r.quiet().await;
}

#[tokio::test]
async fn kubernetes_data_file_edited_in_place_reloads() {
    let dir = TempDir::new("k8s-edit");
    let d = &dir.0;
    let mut r = Running::start(&configmap_volume(d));
    fs::write(d.join("config.toml"), config_text(2)).unwrap();
    r.applied_once("127.0.0.1:2").await;
}

#[test]
fn resolution_names_each_link_and_the_file_read() {
    let dir = TempDir::new("resolution");
    let d = fs::canonicalize(&dir.0).unwrap();
    fs::create_dir(d.join("..2026_1")).unwrap();
    symlink("..2026_1", d.join("..data")).unwrap();
    symlink("..data/config.toml", d.join("config.toml")).unwrap();
    let got = resolution(&d.join("config.toml"));
    let want: HashSet<PathBuf> = [
        d.join("config.toml"),
        d.join("..data"),
        d.join("..2026_1/config.toml"),
    ]
    .into();
    assert_eq!(got, want, "a ConfigMap mount (the file need not exist yet)");
    // `..` after a link is the parent of its target, as the kernel resolves it.
    fs::create_dir_all(d.join("a/b")).unwrap();
    symlink("a/b", d.join("ab")).unwrap();
    let got = resolution(&d.join("ab/../plain.toml"));
    assert_eq!(got, [d.join("ab"), d.join("a/plain.toml")].into());
    // A loop ends.
    symlink("loop2", d.join("loop1")).unwrap();
    symlink("loop1", d.join("loop2")).unwrap();
    assert!(resolution(&d.join("loop1")).contains(&d.join("loop2")));
}

#[tokio::test]
async fn other_files_in_the_directory_are_ignored() {
    let (dir, path) = config_dir("other");
    let mut r = Running::start(&path);
    fs::write(dir.0.join("notes.txt"), "hello").unwrap();
    fs::rename(dir.0.join("notes.txt"), dir.0.join("notes2.txt")).unwrap();
    r.quiet().await;
}

#[tokio::test]
async fn broken_file_is_rejected_then_fixed_file_applied() {
    let (_dir, path) = config_dir("broken");
    let mut r = Running::start(&path);
    fs::write(&path, "[pools.a]\nservers = [\"127.0.0.1:11211:0\"]\n").unwrap();
    match r.next().await {
        ReloadOutcome::Rejected(errors) => {
            assert_eq!(errors.0.len(), 1);
            assert_eq!(errors.0[0].line, 2);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    r.quiet().await;
    assert!(
        r.applied.try_recv().is_err(),
        "a rejected file must not be applied"
    );
    fs::write(&path, config_text(3)).unwrap();
    r.applied_once("127.0.0.1:3").await;
}

#[tokio::test]
async fn rewriting_the_same_text_is_unchanged() {
    let (_dir, path) = config_dir("same");
    let mut r = Running::start(&path);
    fs::write(&path, config_text(1)).unwrap();
    assert_eq!(r.next().await, ReloadOutcome::Unchanged);
    r.quiet().await;
    assert!(r.applied.try_recv().is_err());
}

#[test]
fn reloader_reports_each_outcome_and_tracks_the_digest() {
    let (_dir, path) = config_dir("reloader");
    let (mut reloader, config) = Reloader::load(&path).unwrap();
    assert_eq!(port_of(&config), "127.0.0.1:1");
    assert_eq!(reloader.digest(), digest(&config_text(1)));
    let mut applied = Vec::new();
    assert_eq!(
        reloader.reload(|c, _| applied.push(c)),
        ReloadOutcome::Unchanged
    );
    fs::write(&path, "nonsense = [").unwrap();
    assert!(matches!(
        reloader.reload(|c, _| applied.push(c)),
        ReloadOutcome::Rejected(_)
    ));
    assert_eq!(
        reloader.digest(),
        digest(&config_text(1)),
        "a rejected file is not running"
    );
    fs::remove_file(&path).unwrap();
    let missing = reloader.reload(|c, _| applied.push(c));
    assert!(
        matches!(missing, ReloadOutcome::Rejected(e) if e.0[0].message.starts_with("cannot read file"))
    );
    fs::write(&path, config_text(2)).unwrap();
    let outcome = reloader.reload(|c, _| applied.push(c));
    assert_eq!(
        outcome,
        ReloadOutcome::Applied {
            digest: digest(&config_text(2))
        }
    );
    assert_eq!(applied.len(), 1);
    assert_eq!(port_of(&applied[0]), "127.0.0.1:2");
}

#[test]
fn digest_is_md5_hex() {
    // `printf '' | md5sum`
    assert_eq!(digest(""), "d41d8cd98f00b204e9800998ecf8427e");
}
