//! The memroute binary under test: [`Builder`] writes its config (pools, routes, `[listen]` and
//! `[admin]` lines, extra CLI arguments) and starts it on free loopback ports; [`Memroute`] is the
//! running process — clients, the admin server (`http`, `metrics`, `sample`), signals, its exit
//! status and its log.
//!
//! "memroute with pools X and Y and an admin port" is one call:
//!
//! ```ignore
//! let m = Memroute::builder().pool("x", &xs).pool("y", &ys).route("", &["x", "y"]).admin().start();
//! ```

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::Duration;

use super::client::{Client, exchange};
use super::http::{HttpReply, http, sample};
use super::poll_for;
use super::process::{
    PORT_ATTEMPTS, free_port, kill_and_wait, read_log, scratch_dir, send_signal,
    wait_until_accepting,
};

/// TOML string literal (the test values never need more than quotes escaped).
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `"a", "b"` for a TOML array.
fn toml_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| quoted(s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The memroute binary as a command with no arguments yet, for its one-shot modes
/// (`--version`, `--check-config`, `import-nutcracker`).
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_memroute"))
}

/// `memroute --check-config FILE`, run to completion.
pub fn check_config(file: &Path) -> Output {
    command()
        .arg("--check-config")
        .arg(file)
        .output()
        .expect("run memroute --check-config")
}

/// [`check_config`], asserting it exits 0 (else its status and output): its stdout.
#[track_caller]
pub fn check_config_ok(file: &Path) -> String {
    let out = check_config(file);
    super::process::assert_success(&format!("memroute --check-config {}", file.display()), &out).0
}

/// A memroute config and command line, built up call by call; [`Builder::start`] runs it.
///
/// Without a [`Builder::route`], the config has one catch-all route to the first pool.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct Builder {
    /// `(name, servers, extra lines)` per `[pools.NAME]`, in order.
    pools: Vec<(String, Vec<String>, String)>,
    /// `(prefix, tiers, extra lines)` per `[[routes]]`, in order.
    routes: Vec<(String, Vec<String>, String)>,
    /// Extra lines of the `[listen]` table.
    listen: String,
    /// `(address, extra lines)` per `[[listeners]]` entry, in order; `None`: TCP on a free port.
    listeners: Vec<(Option<String>, String)>,
    /// Extra lines of the `[admin]` table, when there is one.
    admin: Option<String>,
    /// Raw TOML appended at the end (other tables).
    tail: String,
    /// Extra command-line arguments after `--config FILE`.
    args: Vec<String>,
}

impl Builder {
    /// `[pools.NAME]` with `servers` (addresses, or [`super::Memcached`]s, which print as theirs).
    pub fn pool<S: ToString>(self, name: &str, servers: impl IntoIterator<Item = S>) -> Builder {
        self.pool_with(name, servers, "")
    }

    /// As [`Builder::pool`], with extra lines for the table (e.g. `timeout = "200ms"`).
    pub fn pool_with<S: ToString>(
        mut self,
        name: &str,
        servers: impl IntoIterator<Item = S>,
        extra: &str,
    ) -> Builder {
        let servers = servers.into_iter().map(|s| s.to_string()).collect();
        self.pools
            .push((name.to_string(), servers, extra.to_string()));
        self
    }

    /// A `[[routes]]` entry: keys starting with `prefix` go to `tiers` (pool names, tier 0 first).
    pub fn route(self, prefix: &str, tiers: &[&str]) -> Builder {
        self.route_with(prefix, tiers, "")
    }

    /// As [`Builder::route`], with extra lines (e.g. `lower_on_write = "set"`).
    pub fn route_with(mut self, prefix: &str, tiers: &[&str], extra: &str) -> Builder {
        let tiers = tiers.iter().map(|t| t.to_string()).collect();
        self.routes
            .push((prefix.to_string(), tiers, extra.to_string()));
        self
    }

    /// Extra lines for `[listen]` (e.g. `allow_flush_all = true`); added to earlier ones.
    pub fn listen(mut self, extra: &str) -> Builder {
        self.listen.push_str(extra);
        self.listen.push('\n');
        self
    }

    /// A `[[listeners]]` entry on a free TCP port (its port: [`Memroute::listener_ports`], in the
    /// order of these calls), with extra lines (e.g. `pool = "b"`, `tls = false`).
    pub fn listener(mut self, extra: &str) -> Builder {
        self.listeners.push((None, extra.to_string()));
        self
    }

    /// A `[[listeners]]` entry at `address` as written (e.g. `unix:/path`), with extra lines.
    pub fn listener_at(mut self, address: &str, extra: &str) -> Builder {
        self.listeners
            .push((Some(address.to_string()), extra.to_string()));
        self
    }

    /// How many `[[listeners]]` entries need a free TCP port.
    fn tcp_listeners(&self) -> usize {
        self.listeners.iter().filter(|(a, _)| a.is_none()).count()
    }

    /// An `[admin]` table on a free port.
    pub fn admin(self) -> Builder {
        self.admin_with("")
    }

    /// An `[admin]` table on a free port, with extra lines.
    pub fn admin_with(mut self, extra: &str) -> Builder {
        self.admin = Some(extra.to_string());
        self
    }

    /// Raw TOML appended after the routes (tables the builder has no method for).
    pub fn toml(mut self, text: &str) -> Builder {
        self.tail.push_str(text);
        self.tail.push('\n');
        self
    }

    /// Extra command-line arguments (e.g. `["--drain-timeout", "1s"]`).
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The config text for a client port and, if the builder has `[admin]`, an admin port: the
    /// tables in order, one blank line between them, each table's extra lines after its own.
    /// (A builder with [`Builder::listener`]s needs [`Builder::render_with`].)
    pub fn render(&self, port: u16, admin_port: Option<u16>) -> String {
        self.render_with(port, admin_port, &[])
    }

    /// As [`Builder::render`], with the ports of the [`Builder::listener`] entries, in order.
    pub fn render_with(
        &self,
        port: u16,
        admin_port: Option<u16>,
        listener_ports: &[u16],
    ) -> String {
        fn table(head: &str, body: &str, extra: &str) -> String {
            let extra = extra.trim_end_matches('\n');
            let sep = if extra.is_empty() { "" } else { "\n" };
            format!("{head}\n{body}\n{extra}{sep}")
        }
        let mut tables = vec![table(
            "[listen]",
            &format!("address = \"127.0.0.1:{port}\""),
            &self.listen,
        )];
        let mut free = listener_ports.iter();
        for (address, extra) in &self.listeners {
            let address = match address {
                Some(a) => a.clone(),
                None => {
                    let port = free
                        .next()
                        .expect("a port for each TCP [[listeners]] entry");
                    format!("127.0.0.1:{port}")
                }
            };
            let body = format!("address = {}", quoted(&address));
            tables.push(table("[[listeners]]", &body, extra));
        }
        if let (Some(extra), Some(admin)) = (&self.admin, admin_port) {
            let body = format!("address = \"127.0.0.1:{admin}\"");
            tables.push(table("[admin]", &body, extra));
        }
        for (name, servers, extra) in &self.pools {
            let body = format!("servers = [{}]", toml_list(servers));
            tables.push(table(&format!("[pools.{name}]"), &body, extra));
        }
        let default_route = match (self.routes.is_empty(), self.pools.first()) {
            (true, Some((first, _, _))) => {
                vec![(String::new(), vec![first.clone()], String::new())]
            }
            _ => Vec::new(),
        };
        for (prefix, tiers, extra) in self.routes.iter().chain(&default_route) {
            let body = format!(
                "prefix = {}\ntiers = [{}]",
                quoted(prefix),
                toml_list(tiers)
            );
            tables.push(table("[[routes]]", &body, extra));
        }
        if !self.tail.is_empty() {
            tables.push(self.tail.clone());
        }
        tables.join("\n")
    }

    /// Starts memroute on free ports and waits until the client port (and the admin port, if
    /// any) accepts. If a port was taken meanwhile, retries with fresh ones.
    pub fn start(&self) -> Memroute {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let ports = || Ports {
            client: free_port(),
            admin: self.admin.is_some().then(free_port),
            listeners: (0..self.tcp_listeners()).map(|_| free_port()).collect(),
        };
        Memroute::launch_on(
            |p| self.render_with(p.client, p.admin, &p.listeners),
            ports,
            &args,
        )
    }
}

/// The TCP ports memroute is started on.
#[derive(Clone, Debug)]
pub struct Ports {
    /// `[listen] address`.
    pub client: u16,
    /// `[admin] address`, when there is one.
    pub admin: Option<u16>,
    /// The `[[listeners]]` entries on TCP ports, in order.
    pub listeners: Vec<u16>,
}

/// A running memroute, with its config in a private file and its output captured. Killed on
/// drop; its stderr is printed when the test panics.
pub struct Memroute {
    /// The client port (`[listen] address`).
    pub port: u16,
    /// The admin HTTP port, when the config has an `[admin]` table.
    pub admin_port: Option<u16>,
    /// The ports of the builder's [`Builder::listener`] entries, in order.
    pub listener_ports: Vec<u16>,
    /// The config file it was started with (tests may rewrite it to exercise reload).
    pub config_path: PathBuf,
    child: Child,
    dir: PathBuf,
    status: Option<ExitStatus>,
}

/// `PORT` of `host:PORT` at `table.address` in a TOML text, if present.
fn toml_port(config: &toml::Value, table: &str) -> Option<u16> {
    let addr = config.get(table)?.get("address")?.as_str()?;
    addr.rsplit(':').next()?.parse().ok()
}

impl Memroute {
    /// A [`Builder`] with nothing in it yet.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs memroute on a config text as written (its `[listen]` and, if any, `[admin]` ports).
    /// If the client port was taken meanwhile, retries with a new one (rewriting
    /// `127.0.0.1:PORT` in the text), so `port` may differ from the one in the text. New tests
    /// use [`Memroute::builder`].
    pub fn start(config_toml: &str) -> Memroute {
        let parsed: toml::Value = config_toml.parse().expect("test config is valid TOML");
        let first = toml_port(&parsed, "listen").expect("config has [listen] address");
        let admin = toml_port(&parsed, "admin");
        let at = |port: u16| format!("127.0.0.1:{port}\"");
        let mut attempts = 0;
        // Only the client port is rewritten on a retry: tests keep using the admin port they
        // wrote into the text.
        let ports = move || {
            attempts += 1;
            let client = if attempts == 1 { first } else { free_port() };
            Ports {
                client,
                admin,
                listeners: Vec::new(),
            }
        };
        Memroute::launch_on(
            |p| config_toml.replace(&at(first), &at(p.client)),
            ports,
            &[],
        )
    }

    /// Starts `memroute --config FILE ARGS…` with `config(port, admin_port)` written to FILE, on
    /// the ports `ports()` gives (`admin_port` is `Some` when there is an `[admin]`), and waits
    /// until they accept. When a port was taken meanwhile, retries with the next `ports()`.
    pub fn launch(
        config: impl Fn(u16, Option<u16>) -> String,
        mut ports: impl FnMut() -> (u16, Option<u16>),
        args: &[&str],
    ) -> Memroute {
        let ports = move || {
            let (client, admin) = ports();
            Ports {
                client,
                admin,
                listeners: Vec::new(),
            }
        };
        Memroute::launch_on(|p| config(p.client, p.admin), ports, args)
    }

    /// As [`Memroute::launch`], with `config(ports)` on all the [`Ports`] `ports()` gives.
    pub fn launch_on(
        config: impl Fn(&Ports) -> String,
        mut ports: impl FnMut() -> Ports,
        args: &[&str],
    ) -> Memroute {
        let dir = scratch_dir("memroute");
        let config_path = dir.join("memroute.toml");
        let mut errors = Vec::new();
        for attempt in 1..=PORT_ATTEMPTS {
            let p = ports();
            let text = config(&p);
            let Ports {
                client: port,
                admin: admin_port,
                listeners: listener_ports,
            } = p;
            fs::write(&config_path, &text).expect("write config");
            let mut child = Command::new(env!("CARGO_BIN_EXE_memroute"))
                .arg("--config")
                .arg(&config_path)
                .args(args)
                .stdin(Stdio::null())
                .stdout(File::create(dir.join("stdout.log")).expect("stdout log"))
                .stderr(File::create(dir.join("stderr.log")).expect("stderr log"))
                .spawn()
                .expect("spawn memroute");
            // memroute binds the client port before the admin port, so an accepting admin port
            // means both are up; waiting on it opens no client connection (tests count those).
            let up = match admin_port {
                Some(admin) => wait_port(admin, &mut child),
                None => wait_until_accepting(port, &mut child, false),
            };
            match up {
                Ok(()) => {
                    return Memroute {
                        port,
                        admin_port,
                        listener_ports,
                        config_path,
                        child,
                        dir,
                        status: None,
                    };
                }
                Err(e) => {
                    kill_and_wait(&mut child);
                    let stderr = read_log(&dir.join("stderr.log"));
                    let in_use = stderr.to_lowercase().contains("in use") || e.contains("in use");
                    errors.push(format!("{e}\n--- stderr ---\n{stderr}"));
                    if attempt < PORT_ATTEMPTS && in_use {
                        continue;
                    }
                    let _ = fs::remove_dir_all(&dir);
                    panic!("memroute did not start: {errors:#?}\n--- config ---\n{text}");
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name, e.g. `"HUP"` to reload.
    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Everything memroute wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        read_log(&self.dir.join("stderr.log"))
    }

    /// The directory with its config and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces the config file the way editors and Kubernetes do: write a new file, rename it
    /// over the old one.
    pub fn replace_config(&self, toml: &str) {
        let tmp = self.dir.join("memroute.toml.new");
        fs::write(&tmp, toml).expect("write new config");
        fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// `builder`'s config text on this process's ports (what a reload to it must read).
    pub fn config_for(&self, builder: &Builder) -> String {
        builder.render_with(self.port, self.admin_port, &self.listener_ports)
    }

    /// [`Memroute::replace_config`] with `builder`'s config on this process's ports.
    pub fn replace_config_with(&self, builder: &Builder) {
        self.replace_config(&self.config_for(builder));
    }

    /// The exit status, if it has exited (kept once seen).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits (polling, at most `limit`) for the process to exit: its status, or `None` if it
    /// still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        poll_for(limit, || self.try_status())
    }

    /// A new client connection to the client port.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Writes `request` on a new connection, half-closes it and returns every reply byte.
    pub fn exchange(&self, request: &str) -> String {
        exchange(self.port, request)
    }

    /// The admin port (panics when the config has no `[admin]`).
    #[track_caller]
    pub fn admin(&self) -> u16 {
        self.admin_port
            .expect("memroute started with an [admin] table")
    }

    /// One HTTP request to the admin server.
    pub fn http(&self, method: &str, path: &str) -> HttpReply {
        http(self.admin(), method, path)
    }

    /// `GET path` on the admin server.
    pub fn get(&self, path: &str) -> HttpReply {
        self.http("GET", path)
    }

    /// The current `/metrics` text (asserting status 200).
    #[track_caller]
    pub fn metrics(&self) -> String {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "/metrics: {}", reply.body);
        reply.body
    }

    /// The counter `name` with `labels` on `/metrics` now, 0 while absent (see
    /// [`super::http::counter`]).
    #[track_caller]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        super::http::counter(&self.metrics(), name, labels)
    }

    /// The value of series `name` with `labels` on `/metrics` now (see [`sample`]).
    #[track_caller]
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        sample(&self.metrics(), name, labels)
    }
}

/// Waits until `port` accepts, failing early if `child` exits; and, since a port can be taken
/// by another process meanwhile (memroute then exits), checks it still runs a moment later.
fn wait_port(port: u16, child: &mut Child) -> Result<(), String> {
    let exited = |child: &mut Child| match child.try_wait() {
        Ok(Some(status)) => Err(format!("exited before listening on port {port}: {status}")),
        _ => Ok(()),
    };
    let up = poll_for(super::POLL_LIMIT, || match exited(child) {
        Err(e) => Some(Err(e)),
        Ok(()) => TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(())),
    });
    up.unwrap_or_else(|| Err(format!("port {port} never accepted")))?;
    thread::sleep(Duration::from_millis(50));
    exited(child)
}

impl Drop for Memroute {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
        if thread::panicking() {
            eprintln!(
                "--- memroute stderr ({}) ---\n{}",
                self.dir.display(),
                self.stderr()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
