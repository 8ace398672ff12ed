//! The `memroute` command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use memroute::config::{Config, reload};
use memroute::metrics::Metrics;
use memroute::state::Shared;

/// Quiet time after the last file event before a reload (editors write in bursts).
const RELOAD_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// After the drain, how long the runtime may take to stop its remaining tasks.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(500);

/// A memcached proxy: twemproxy-compatible ketama routing, fallback tiers for migrations,
/// hot reload and Prometheus metrics.
#[derive(Parser, Debug)]
#[command(name = "memroute", version, about, long_about = None, subcommand_negates_reqs = true)]
struct Cli {
    /// The TOML config file to run with (reloaded on change and on SIGHUP).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,

    /// Only validate FILE: print every error with its line and column, exit 0 if valid, 1 if not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,

    /// Log line format: text for people, json for log collectors (one object per line).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log filter (tracing-subscriber EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,

    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// On SIGTERM/SIGINT, how long to wait for clients to get their in-flight replies before
    /// exiting anyway (a second signal exits at once).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: std::time::Duration,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the memroute TOML equivalent to a twemproxy (nutcracker) YAML config.
    ImportNutcracker {
        /// The nutcracker YAML file.
        file: PathBuf,
        /// Import only this pool.
        #[arg(long)]
        pool: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, &cli.log_level);

    if let Some(Command::ImportNutcracker { file, pool }) = &cli.command {
        return import_nutcracker(file, pool.as_deref());
    }
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(path) = cli.config.clone() else {
        // clap requires --config when neither --check-config nor a subcommand is given.
        eprintln!("memroute: --config FILE is required");
        return ExitCode::FAILURE;
    };
    // One thread: the current-thread scheduler. A multi-thread runtime with one worker checks
    // its global queue only now and then, and under 1,000 clients served them unfairly
    // (benchmark (d): slowest client at 57 % of the average, p99 134 ms; current-thread: 95 %,
    // 31 ms).
    raise_fd_limit();
    let mut runtime = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("memroute: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(path, cli.drain_timeout));
    // Tasks still running (a session blocked on a client that does not read, a DNS lookup on a
    // blocking thread) must not hold the exit.
    runtime.shutdown_timeout(RUNTIME_STOP);
    code
}

async fn run(path: PathBuf, drain_timeout: std::time::Duration) -> ExitCode {
    // Before anything else: from here on SIGTERM/SIGINT mean "drain", never the default
    // "die at once", even during start-up.
    let mut signals = match memroute::server::shutdown::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    // Watch before the first load, so an edit made during it is not missed.
    let triggers = match memroute::watch::spawn_watcher(&path, RELOAD_DEBOUNCE) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "config watch unavailable; hot reload is off");
            None
        }
    };
    let (reloader, config) = match reload::Reloader::load(&path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let source_hash = reloader.digest().to_string();
    let metrics = Arc::new(Metrics::new());
    let listeners = config.listeners.clone();
    let shared = Shared::new(config, source_hash, metrics);
    let bound = match memroute::server::listener::bind_all(&listeners).await {
        Ok(b) => b,
        Err((address, e)) => {
            tracing::error!(address = %address, error = %e, "cannot bind a client listener");
            return ExitCode::FAILURE;
        }
    };
    shared
        .listening
        .store(true, std::sync::atomic::Ordering::Release);
    let address = listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(address = %address, version = env!("CARGO_PKG_VERSION"), "memroute listening");
    // Bound once: a reload that changes `[admin] address` needs a restart.
    if let Some(admin) = shared.snapshot().config.admin.clone() {
        if let Err(e) = memroute::admin::spawn(&admin.address, shared.clone()).await {
            tracing::error!(address = %admin.address, error = %e, "cannot bind the admin server");
            return ExitCode::FAILURE;
        }
    }
    if let Some(triggers) = triggers {
        let apply = shared.clone();
        let report = shared.clone();
        tokio::spawn(reload::reload_loop(
            reloader,
            triggers,
            move |config, digest| apply.apply(config, digest.to_string()),
            move |outcome| report.record_reload(outcome),
        ));
    }
    tokio::spawn(release_freed_memory());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(memroute::server::supervise(bound, shared.clone(), stop_rx));
    signals.first().await;
    tracing::info!("shutting down: draining client connections");
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    let _ = stop_tx.send(true);
    let _ = server.await;
    memroute::server::shutdown::drain(&shared, &mut signals, drain_timeout).await;
    ExitCode::SUCCESS
}

/// Raises the soft limit on open descriptors to the hard one, as memcached and nginx do: every
/// client and backend connection is a descriptor, and `max_connections` (default 16,384) is far
/// above the usual soft limit of 1,024, past which accepts would fail with EMFILE.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                eprintln!(
                    "memroute: cannot raise the open file limit to {}",
                    lim.rlim_max
                );
            }
        }
    }
}

/// Every 10 s, asks glibc to return freed heap pages to the OS. glibc keeps what a burst of
/// client connections freed (measured: 10,000 idle connections closed, RSS stayed at 23.5 MiB
/// against 5.8 MiB idle); malloc_trim releases it. It walks the free lists once: cheap at this
/// interval.
async fn release_freed_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim takes no pointers and is safe to call at any time from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn import_nutcracker(file: &std::path::Path, pool: Option<&str>) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read file: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match memroute::config::nutcracker::import(&text, pool) {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald, files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
