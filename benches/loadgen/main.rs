//! memroute's benchmark: memroute against twemproxy (nutcracker), memcached's built-in proxy
//! (when `--mcproxy` gives one) and talking to memcached directly, over the same memcached
//! servers, with the same closed-loop load generator.
//! How to run it and read it: `bench/README.md`. In short: `bench/run.sh` (or `cargo bench
//! --bench loadgen`), about 8 minutes on 2 cores, loopback only.
//!
//! This process is the orchestrator: it starts every server, runs each measurement in a fresh
//! worker process (this same binary with `--worker`, pinned to its own CPU), and prints the table.
//!
//! - [`workload`]: the keyspace and the workloads; the jobs and results of the worker.
//! - [`client`]: the worker: closed-loop connections, reply checks, latency histogram.
//! - [`reply`]: byte-for-byte checks of memcached replies (classic and meta).
//! - [`setup`]: the memcached, nutcracker, memroute and memcached-proxy processes and configs.
//! - [`probe`]: checks made before measuring: does a target speak meta, does memcached's proxy
//!   place keys on memroute's ring.
//! - [`procs`]: child processes, `/proc` CPU time and RSS.
//! - [`report`]: medians, ratios and the printed tables.

mod client;
mod hist;
mod probe;
mod procs;
mod reply;
mod report;
mod setup;
mod workload;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

use procs::Proc;
use report::{MemoryRow, Row};
use setup::{Certs, Layout, MemrouteOpts, Server};
use workload::{FillResult, Job, LoadResult, LoadSpec, Proto, Target, Watch, Workload};

/// Benchmark memroute against nutcracker and direct memcached (see bench/README.md).
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Cli {
    /// Do not pin processes to CPUs (memroute then runs its default one thread per core).
    #[arg(long)]
    unpinned: bool,
    /// Only the memory measurement (idle, 10,000 connections, after close).
    #[arg(long, conflicts_with = "no_memory")]
    memory: bool,
    /// Skip the memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Rounds; each round runs every target once per workload. The median is shown.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Warm-up seconds per run (after the connections are open, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Which workloads to run, e.g. `ab` (all: abcdefghikt).
    #[arg(long, default_value = "abcdefghikt")]
    workloads: String,
    /// Keyspace size (every key is stored before measuring).
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Idle client connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle_conns: usize,
    /// Seconds after the idle connections close before RSS is read again.
    #[arg(long, default_value_t = 60)]
    after_close: u64,
    /// Record a `perf` profile of memroute during each of its runs into this directory
    /// (`perf-<workload>-<round>.data`); the sampling slows memroute, so compare only
    /// profiles, not those runs' numbers.
    #[arg(long, value_name = "DIR")]
    perf: Option<PathBuf>,
    /// The memroute binary (default: the release build cargo made for this bench).
    #[arg(long)]
    memroute: Option<PathBuf>,
    /// A second memroute binary, run as an extra target `memroute-b` next to memroute in every
    /// round: an A/B comparison of two builds under the same conditions.
    #[arg(long, value_name = "PATH")]
    memroute_b: Option<PathBuf>,
    /// memcached built with `--enable-proxy` (bench/README.md tells how): run its proxy as
    /// target `mcproxy` over the same backends (ketama ring, one worker thread).
    #[arg(long, value_name = "PATH")]
    mcproxy: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal: run one worker job (JSON).
    #[arg(long, hide = true)]
    worker: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Some(job) = &cli.worker {
        client::main(job);
        return;
    }
    Bench::new(cli).run();
}

struct Bench {
    cli: Cli,
    layout: Layout,
    memroute: PathBuf,
    dir: PathBuf,
    clk_tck: u64,
    /// What the `main` servers hold now: (keys, value size, gap).
    main_filled: std::cell::Cell<(u32, usize, u32)>,
    /// Made on first use, for workload k.
    certs: std::cell::OnceCell<Certs>,
}

/// The four memcached servers: `main` (tier 0, and the only pool of workloads a–d) and `old`
/// (the fallback tier of workload e).
struct Backends {
    main: Vec<Server>,
    old: Vec<Server>,
}

impl Backends {
    fn addrs(list: &[Server]) -> Vec<String> {
        list.iter().map(|s| s.addr.clone()).collect()
    }

    fn pids(list: &[Server]) -> Vec<u32> {
        list.iter().map(|s| s.proc.pid).collect()
    }
}

impl Bench {
    fn new(cli: Cli) -> Bench {
        let layout = Layout {
            pinned: !cli.unpinned,
        };
        if layout.pinned && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            eprintln!("pinned mode needs CPUs 0 and 1; use --unpinned");
            std::process::exit(2);
        }
        for (tool, package) in [
            ("memcached", "memcached"),
            ("nutcracker", "nutcracker"),
            ("taskset", "util-linux"),
        ] {
            let found = std::process::Command::new(tool)
                .arg("-V")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok();
            if !found {
                eprintln!("{tool} not found: install it (Debian: apt-get install {package})");
                std::process::exit(2);
            }
        }
        let memroute = cli
            .memroute
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_memroute")));
        let clk_tck = procs::output(&["getconf", "CLK_TCK"], None)
            .parse()
            .unwrap_or(100);
        if let Some(exe) = &cli.mcproxy {
            if !exe.is_file() {
                eprintln!(
                    "--mcproxy {}: no such file (bench/README.md tells how to build it)",
                    exe.display()
                );
                std::process::exit(2);
            }
        }
        Bench {
            cli,
            layout,
            memroute,
            dir: procs::scratch_dir(),
            clk_tck,
            main_filled: std::cell::Cell::new((0, 0, 0)),
            certs: std::cell::OnceCell::new(),
        }
    }

    fn run(&self) {
        let began = Instant::now();
        self.print_header();
        let backends = Backends {
            main: (1..=2)
                .map(|i| setup::memcached(&self.dir, &format!("memcached-main{i}"), self.layout))
                .collect(),
            old: (1..=2)
                .map(|i| setup::memcached(&self.dir, &format!("memcached-old{i}"), self.layout))
                .collect(),
        };
        for s in &backends.old {
            self.fill(&s.addr, self.cli.keys, self.cli.value_size, 0);
        }
        self.fill_main(&backends, self.cli.keys, self.cli.value_size, 0);
        if !self.cli.memory {
            let rows = self.throughput(&backends);
            println!("{}", report::throughput_table(&rows));
            let scaling = report::scaling_table(&rows);
            if !scaling.is_empty() {
                println!("{scaling}");
            }
        }
        if !self.cli.no_memory {
            // The memory measurement's one `get` per connection expects the default keyspace.
            self.fill_main(&backends, self.cli.keys, self.cli.value_size, 0);
            let rows = self.memory(&backends);
            println!("{}", report::memory_table(&rows, self.cli.idle_conns));
        }
        println!(
            "total time: {:.0} s; load average at the end: {}",
            began.elapsed().as_secs_f64(),
            procs::loadavg()
        );
        drop(backends);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn print_header(&self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let commit = procs::output(&["git", "rev-parse", "--short=12", "HEAD"], Some(root));
        let subject = procs::output(&["git", "log", "-1", "--format=%s"], Some(root));
        let dirty = procs::output(
            &["git", "status", "--porcelain", "--", "src", "Cargo.toml"],
            Some(root),
        );
        let dirty = if dirty.is_empty() {
            ""
        } else {
            " + uncommitted changes in src/ or Cargo.toml"
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "?".into());
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let command = std::env::var("MEMROUTE_BENCH_COMMAND")
            .unwrap_or_else(|_| format!("cargo bench --bench loadgen -- {}", args.join(" ")));
        println!(
            "memroute benchmark   {}",
            procs::output(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"], None)
        );
        println!("command:    {}", command.trim_end());
        println!(
            "machine:    nproc {}, {cpu}, Linux {}",
            procs::output(&["nproc"], None),
            procs::output(&["uname", "-r"], None)
        );
        println!(
            "memroute:   {commit}{dirty} \"{subject}\" ({})",
            self.memroute.display()
        );
        if let Some(b) = &self.cli.memroute_b {
            println!("memroute-b: {}", b.display());
        }
        if let Some(m) = &self.cli.mcproxy {
            let exe = m.display().to_string();
            println!(
                "mcproxy:    {} ({exe}), a ketama ring (md5) over the same servers",
                procs::output(&[&exe, "-V"], None)
            );
        }
        println!(
            "versus:     {}, {}",
            procs::output(&["memcached", "-V"], None),
            procs::output(&["nutcracker", "-V"], None)
                .lines()
                .next()
                .unwrap_or("?")
                .trim_start_matches("This is ")
        );
        println!(
            "load:       {} (1, 5, 15 min load averages at the start; other work on the machine makes every number noisier)",
            procs::loadavg()
        );
        println!("layout:     {}", self.layout.describe());
        println!(
            "settings:   {} rounds x ({} s warm-up + {} s measured) per workload and target, median shown; \
             {} keys, {}-byte values (h, i: their own), all stored before measuring",
            self.cli.rounds, self.cli.warmup, self.cli.duration, self.cli.keys, self.cli.value_size
        );
        println!();
    }

    /// The chosen workloads, every target, `rounds` times; targets alternate within each round.
    fn throughput(&self, backends: &Backends) -> Vec<Row> {
        let main = Backends::addrs(&backends.main);
        let mut base = vec![(
            Target::Nutcracker,
            setup::nutcracker(&self.dir, "nutcracker", &main, self.layout),
        )];
        base.extend(self.memroutes(&main, MemrouteOpts::default(), self.layout, ""));
        if let Some(exe) = &self.cli.mcproxy {
            let p = setup::mcproxy(exe, &self.dir, "mcproxy", &main, 1, self.layout);
            // Every server holds every key, so placement does not change what is measured; but
            // the proxy should route as a ketama ring does, and this says whether it does.
            match probe::ring(&p.addr, &main, 2000) {
                Ok(s) => println!("mcproxy ring check: {s}"),
                Err(s) => println!("mcproxy ring check FAILED: {s}"),
            }
            base.push((Target::McProxy, p));
        }
        let mut rows: Vec<Row> = Vec::new();
        let chosen: Vec<Workload> = workload::workloads()
            .into_iter()
            .filter(|w| self.cli.workloads.contains(w.id))
            .collect();
        for w in &chosen {
            let keys = w.max_keys.map_or(self.cli.keys, |m| m.min(self.cli.keys));
            let size = w.value_size.unwrap_or(self.cli.value_size);
            self.fill_main(backends, keys, size, w.gap);
            let mut watch_backends = Backends::pids(&backends.main);
            // Proxies of this workload only (looked up before the shared ones).
            let mut own: Vec<(Target, Server)> = Vec::new();
            let mut layout = self.layout;
            if w.gap > 0 {
                let old = Backends::addrs(&backends.old);
                let opts = MemrouteOpts {
                    old: Some(&old),
                    ..MemrouteOpts::default()
                };
                own.extend(self.memroutes(&main, opts, self.layout, "-tiered"));
                watch_backends.extend(Backends::pids(&backends.old));
            }
            if w.tls {
                let opts = MemrouteOpts {
                    tls: Some(self.certs()),
                    ..MemrouteOpts::default()
                };
                own.extend(self.memroutes(&main, opts, self.layout, "-tls"));
            }
            if w.unpinned {
                layout = Layout { pinned: false };
                self.pin(backends, None);
                own.push((
                    Target::Nutcracker,
                    setup::nutcracker(&self.dir, "nutcracker-t", &main, layout),
                ));
                own.push((
                    Target::Memroute,
                    setup::memroute(
                        &self.memroute,
                        &self.dir,
                        "memroute-t1",
                        &main,
                        layout,
                        MemrouteOpts {
                            threads: Some(1),
                            ..MemrouteOpts::default()
                        },
                    ),
                ));
                own.push((
                    Target::Memroute2T,
                    setup::memroute(
                        &self.memroute,
                        &self.dir,
                        "memroute-t2",
                        &main,
                        layout,
                        MemrouteOpts {
                            threads: Some(2),
                            ..MemrouteOpts::default()
                        },
                    ),
                ));
                if let Some(exe) = &self.cli.mcproxy {
                    own.push((
                        Target::McProxy,
                        setup::mcproxy(exe, &self.dir, "mcproxy-t1", &main, 1, layout),
                    ));
                    own.push((
                        Target::McProxy2T,
                        setup::mcproxy(exe, &self.dir, "mcproxy-t2", &main, 2, layout),
                    ));
                }
            }
            let mut targets: Vec<Target> = w
                .targets
                .iter()
                .copied()
                .filter(|t| !t.is_mcproxy() || self.cli.mcproxy.is_some())
                .collect();
            if self.cli.memroute_b.is_some() && !w.unpinned {
                let after = targets
                    .iter()
                    .position(|&t| t == Target::Memroute)
                    .map_or(targets.len(), |i| i + 1);
                targets.insert(after, Target::MemrouteB);
            }
            let proxy_of = |t: Target| {
                own.iter()
                    .chain(&base)
                    .find(|(p, _)| *p == t)
                    .map(|(_, s)| s)
            };
            let first = rows.len();
            for &t in &targets {
                let addrs = proxy_of(t).map_or_else(|| main.clone(), |p| vec![p.addr.clone()]);
                // A target that does not speak meta yet gets a note instead of a failed run.
                let skipped = match w.proto {
                    Proto::Classic => None,
                    Proto::Meta | Proto::MetaQuiet => probe::meta(&addrs[0]).err(),
                };
                if let Some(why) = &skipped {
                    eprintln!("({}) {}: skipped, {why}", w.id, t.name());
                }
                rows.push(Row {
                    workload: w.clone(),
                    target: t,
                    runs: Vec::new(),
                    skipped,
                });
            }
            for round in 0..self.cli.rounds {
                for (k, &t) in targets.iter().enumerate() {
                    if rows[first + k].skipped.is_some() {
                        continue;
                    }
                    let proxy = proxy_of(t);
                    let addrs = proxy.map_or_else(|| main.clone(), |p| vec![p.addr.clone()]);
                    let mut watch = vec![Watch {
                        label: "backends".into(),
                        pids: watch_backends.clone(),
                    }];
                    if let Some(p) = proxy {
                        watch.push(Watch {
                            label: "proxy".into(),
                            pids: vec![p.proc.pid],
                        });
                    }
                    let seed = (round as u64) << 32 | u64::from(w.id as u32);
                    let perf = match (t, &self.cli.perf, proxy) {
                        (Target::Memroute, Some(dir), Some(p)) => {
                            Some(self.perf(dir, p.proc.pid, w.id, round))
                        }
                        _ => None,
                    };
                    // Workload k: clients speak TLS to the proxy; memcached itself stays plain.
                    let tls_ca = (w.tls && proxy.is_some()).then(|| self.certs().ca.clone());
                    let r = self.load(w, keys, size, addrs, watch, seed, layout, tls_ca);
                    if let Some(p) = perf {
                        let _ = p.finish(Duration::from_secs(120));
                    }
                    eprintln!("{}", report::progress(w, t, round + 1, self.cli.rounds, &r));
                    rows[first + k].runs.push(r);
                }
            }
            if w.unpinned {
                self.pin(backends, self.layout.servers());
            }
        }
        rows
    }

    /// Stores the keyspace a workload needs in the `main` servers, unless they hold it already.
    fn fill_main(&self, backends: &Backends, keys: u32, size: usize, gap: u32) {
        if self.main_filled.get() == (keys, size, gap) {
            return;
        }
        for s in &backends.main {
            self.fill(&s.addr, keys, size, gap);
        }
        self.main_filled.set((keys, size, gap));
    }

    /// Moves every backend (all threads) to `cpus`, or to every CPU with `None`.
    fn pin(&self, backends: &Backends, cpus: Option<&str>) {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let all = format!("0-{}", n.saturating_sub(1));
        let list = cpus.unwrap_or(&all);
        for s in backends.main.iter().chain(&backends.old) {
            let pid = s.proc.pid.to_string();
            let out = procs::output(&["taskset", "-a", "-p", "-c", list, &pid], None);
            if out == "?" {
                eprintln!("taskset -a -p -c {list} {pid} failed");
            }
        }
    }

    /// The TLS certificates of workload k.
    fn certs(&self) -> &Certs {
        self.certs.get_or_init(|| Certs::new(&self.dir))
    }

    /// memroute (and memroute B if asked for) over pool `main`, with `old` as a fallback tier
    /// if given.
    fn memroutes(
        &self,
        main: &[String],
        opts: MemrouteOpts<'_>,
        layout: Layout,
        suffix: &str,
    ) -> Vec<(Target, Server)> {
        let mut list = vec![(Target::Memroute, &self.memroute)];
        if let Some(b) = &self.cli.memroute_b {
            list.push((Target::MemrouteB, b));
        }
        list.into_iter()
            .map(|(t, exe)| {
                let name = format!("{}{suffix}", t.name());
                (
                    t,
                    setup::memroute(exe, &self.dir, &name, main, layout, opts),
                )
            })
            .collect()
    }

    /// Starts `perf record` on `pid` for the warm-up and the measured window.
    fn perf(&self, dir: &Path, pid: u32, workload: char, round: usize) -> Proc {
        std::fs::create_dir_all(dir).expect("perf dir");
        let out = dir.join(format!("perf-{workload}-{}.data", round + 1));
        let secs = self.cli.warmup + self.cli.duration;
        let argv: Vec<String> = [
            "perf",
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "--call-graph",
            "dwarf,16384",
            "-p",
            &pid.to_string(),
            "-o",
            &out.display().to_string(),
            "--",
            "sleep",
            &secs.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Proc::spawn(
            "perf",
            &argv,
            None,
            &self.dir.join(format!("perf-{workload}-{round}.log")),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        w: &Workload,
        keys: u32,
        value_size: usize,
        addrs: Vec<String>,
        watch: Vec<Watch>,
        seed: u64,
        layout: Layout,
        tls_ca: Option<PathBuf>,
    ) -> LoadResult {
        let spec = LoadSpec {
            addrs,
            conns: w.conns,
            depth: w.depth,
            mget: w.mget,
            proto: w.proto,
            set_percent: w.set_percent,
            keys,
            gap: w.gap,
            value_size,
            warmup_ms: (self.cli.warmup * 1000.0) as u64,
            measure_ms: (self.cli.duration * 1000.0) as u64,
            watch,
            clk_tck: self.clk_tck,
            seed,
            tls_ca,
        };
        let limit = Duration::from_secs_f64(self.cli.warmup + self.cli.duration + 60.0);
        let out = self
            .worker(&Job::Load(spec), layout)
            .finish(limit)
            .unwrap_or_else(|e| panic!("{e}"));
        parse_last_line(&out)
    }

    fn fill(&self, addr: &str, keys: u32, value_size: usize, gap: u32) {
        let job = Job::Fill {
            addr: addr.to_string(),
            keys,
            value_size,
            gap,
        };
        let out = self
            .worker(&job, self.layout)
            .finish(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let r: FillResult = parse_last_line(&out);
        assert_eq!(r.errors, 0, "storing the keyspace in {addr} failed: {r:?}");
    }

    fn worker(&self, job: &Job, layout: Layout) -> Proc {
        let exe = std::env::current_exe().expect("current exe");
        let argv = vec![
            exe.display().to_string(),
            "--worker".into(),
            serde_json::to_string(job).expect("JSON"),
        ];
        Proc::spawn_piped("load generator", &argv, layout.loadgen())
    }

    /// RSS of a fresh memroute and a fresh nutcracker: idle, holding `idle_conns` connections,
    /// and `after_close` seconds after those closed.
    fn memory(&self, backends: &Backends) -> Vec<MemoryRow> {
        let main = Backends::addrs(&backends.main);
        let servers = [
            (
                "memroute",
                setup::memroute(
                    &self.memroute,
                    &self.dir,
                    "memroute-mem",
                    &main,
                    self.layout,
                    MemrouteOpts::default(),
                ),
            ),
            (
                "nutcracker",
                setup::nutcracker(&self.dir, "nutcracker-mem", &main, self.layout),
            ),
        ];
        std::thread::sleep(Duration::from_secs(1));
        let mut rows: Vec<MemoryRow> = servers
            .iter()
            .map(|(name, s)| MemoryRow {
                name,
                idle: procs::rss(s.proc.pid),
                ..MemoryRow::default()
            })
            .collect();
        let mut closed_at = Vec::new();
        for ((_, s), row) in servers.iter().zip(&mut rows) {
            let job = Job::Hold {
                addr: s.addr.clone(),
                conns: self.cli.idle_conns,
                value_size: self.cli.value_size,
            };
            let mut holder = self.worker(&job, self.layout);
            let mut out = std::io::BufReader::new(holder.child().stdout.take().expect("piped"));
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let counts: Vec<usize> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|n| n.parse().ok())
                .collect();
            row.conns_ok = counts.first().copied().unwrap_or(0);
            row.conns_failed = counts.get(1).copied().unwrap_or(self.cli.idle_conns);
            std::thread::sleep(Duration::from_secs(1));
            row.with_conns = procs::rss(s.proc.pid);
            eprintln!("memory: {} holds {} connections", row.name, row.conns_ok);
            drop(holder.child().stdin.take());
            line.clear();
            let _ = out.read_line(&mut line);
            closed_at.push(Instant::now());
            if let Err(e) = holder.finish(Duration::from_secs(30)) {
                eprintln!("memory: {e}");
            }
        }
        for (((_, s), row), closed) in servers.iter().zip(&mut rows).zip(closed_at) {
            let wait = Duration::from_secs(self.cli.after_close);
            eprintln!(
                "memory: waiting {} s after {} connections closed",
                wait.saturating_sub(closed.elapsed()).as_secs(),
                row.name
            );
            std::thread::sleep(wait.saturating_sub(closed.elapsed()));
            row.after_close = procs::rss(s.proc.pid);
            row.after_secs = closed.elapsed().as_secs_f64();
        }
        rows
    }
}

fn parse_last_line<T: serde::de::DeserializeOwned>(out: &str) -> T {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("worker output {line:?}: {e}"))
}
