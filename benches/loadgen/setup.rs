//! Starting the targets: memcached backends, and nutcracker, memroute and memcached's proxy over
//! the same backends, each with the config a user would write, on the CPUs the layout gives them.

use std::path::{Path, PathBuf};

use crate::procs::{self, Proc};

/// Where processes run.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Pinned: backends and proxy on CPU 0, load generator on CPU 1.
    pub pinned: bool,
}

impl Layout {
    /// CPUs of memcached and the proxies.
    pub fn servers(self) -> Option<&'static str> {
        self.pinned.then_some("0")
    }

    /// CPUs of the load generator.
    pub fn loadgen(self) -> Option<&'static str> {
        self.pinned.then_some("1")
    }

    /// memroute's `--threads`: one worker when it has one core, like single-threaded twemproxy;
    /// its default (one per core) otherwise.
    pub fn memroute_threads(self) -> Option<usize> {
        self.pinned.then_some(1)
    }

    /// One line for the header.
    pub fn describe(self) -> &'static str {
        if self.pinned {
            "pinned: memcached servers + proxy on CPU 0 (memroute --threads 1), load generator on CPU 1"
        } else {
            "unpinned: no taskset, memroute with its default threads (one per core)"
        }
    }
}

/// A started server and its client address.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// `127.0.0.1:port`.
    pub addr: String,
}

/// memroute's connections per server in the benchmark: one, as nutcracker's `server_connections`
/// default, so both proxies batch over the same number of backend sockets. (memroute's default
/// is two; on the single pinned core two connections halve the batches and cost ~10 % in (a).)
const BENCH_CONNECTIONS: usize = 1;

/// memcached's memory limit: room for every workload's keyspace at once (10,000 × 4 KiB and
/// 1,000 × 100 KiB values next to the 100-byte ones), so nothing is evicted between workloads.
const MEMCACHED_MB: usize = 1024;

/// Starts `memcached -u root -U 0 -l 127.0.0.1 -p PORT -t 1 -c 4096 -m 1024`.
pub fn memcached(dir: &Path, name: &str, layout: Layout) -> Server {
    let port = procs::free_port();
    let argv = memcached_argv("memcached", port, 1, 4096, MEMCACHED_MB);
    start(dir, name, &argv, port, layout)
}

/// `EXE -u root -U 0 -l 127.0.0.1 -p PORT -t THREADS -c CONNS -m MB`: memcached's command line
/// (memcached itself or its proxy build) for a loopback TCP server run as root, no UDP.
fn memcached_argv(exe: &str, port: u16, threads: usize, conns: u32, mb: usize) -> Vec<String> {
    let flags = format!("-u root -U 0 -l 127.0.0.1 -p {port} -t {threads} -c {conns} -m {mb}");
    std::iter::once(exe.to_string())
        .chain(flags.split(' ').map(String::from))
        .collect()
}

/// Starts nutcracker in the foreground with twemproxy's defaults for memcache (fnv1a_64, ketama)
/// and a 1 s timeout like memroute's default.
pub fn nutcracker(dir: &Path, name: &str, backends: &[String], layout: Layout) -> Server {
    let port = procs::free_port();
    let stats_port = procs::free_port();
    let mut yaml = format!(
        "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 1000\n  backlog: 1024\n  preconnect: true\n  auto_eject_hosts: false\n  servers:\n"
    );
    for b in backends {
        yaml.push_str(&format!("   - {b}:1\n"));
    }
    let conf = write(dir, &format!("{name}.yml"), &yaml);
    let argv = vec![
        "nutcracker".to_string(),
        "-c".into(),
        conf.display().to_string(),
        "-s".into(),
        stats_port.to_string(),
        "-a".into(),
        "127.0.0.1".into(),
        // Warnings and worse only: at the default level it logs every client connection.
        "-v".into(),
        "4".into(),
    ];
    start(dir, name, &argv, port, layout)
}

/// What a memroute of the benchmark has beyond pool `main`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemrouteOpts<'a> {
    /// `old` as a fallback tier (`warm = false`, so tier 0 keeps missing the same keys for the
    /// whole run).
    pub old: Option<&'a [String]>,
    /// Worker threads (`None`: as the layout says).
    pub threads: Option<usize>,
    /// Clients connect over TLS with this certificate and key (workload k).
    pub tls: Option<&'a Certs>,
}

/// A CA and a certificate it signed for `localhost` and `127.0.0.1`, written to files.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate (PEM): what the load generator trusts.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl Certs {
    /// Makes a fresh CA and server certificate with rcgen in `dir`.
    pub fn new(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("self-signed CA");
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params")
            .signed_by(&key, &ca, &ca_key)
            .expect("signed server certificate");
        Certs {
            ca: write(dir, "bench-ca.pem", &ca.pem()),
            cert: write(dir, "bench-server.pem", &leaf.pem()),
            key: write(dir, "bench-server.key", &key.serialize_pem()),
        }
    }
}

/// Starts memroute with pool `main` and `opts`.
pub fn memroute(
    exe: &Path,
    dir: &Path,
    name: &str,
    main: &[String],
    layout: Layout,
    opts: MemrouteOpts<'_>,
) -> Server {
    let port = procs::free_port();
    let list = |s: &[String]| {
        s.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tls = opts.tls.map_or_else(String::new, |c| {
        format!(
            "tls = {{ cert = {:?}, key = {:?} }}\n",
            c.cert.display().to_string(),
            c.key.display().to_string()
        )
    });
    let mut toml = format!(
        "[listen]\naddress = \"127.0.0.1:{port}\"\nmax_connections = 20000\n{tls}\n\
         [pools.main]\nservers = [{}]\nconnections = {BENCH_CONNECTIONS}\n\n",
        list(main)
    );
    match opts.old {
        None => toml.push_str("[[routes]]\nprefix = \"\"\ntiers = [\"main\"]\n"),
        Some(old) => toml.push_str(&format!(
            "[pools.old]\nservers = [{}]\nconnections = {BENCH_CONNECTIONS}\n\n[[routes]]\nprefix = \"\"\ntiers = [\"main\", \"old\"]\nwarm = false\n",
            list(old)
        )),
    }
    let conf = write(dir, &format!("{name}.toml"), &toml);
    let mut argv = vec![
        exe.display().to_string(),
        "--config".into(),
        conf.display().to_string(),
    ];
    if let Some(n) = opts.threads.or(layout.memroute_threads()) {
        argv.extend(["--threads".into(), n.to_string()]);
    }
    start(dir, name, &argv, port, layout)
}

/// Starts memcached's built-in proxy (`exe`: a memcached built with `--enable-proxy`) with
/// `threads` worker threads, routing every command over `backends` with a ketama ring as
/// twemproxy and libmemcached lay it out (160 points per server from md5 of `host:port-N`, md5 of
/// the key): the ring memroute builds with `hash = "md5"`. One connection per backend and worker
/// thread and a 1 s timeout, like the other proxies here. The config is
/// /work/shared/peers/memcached-proxy/proxy.lua with the backends written in.
pub fn mcproxy(
    exe: &Path,
    dir: &Path,
    name: &str,
    backends: &[String],
    threads: usize,
    layout: Layout,
) -> Server {
    let port = procs::free_port();
    let mut list = String::new();
    for (i, b) in backends.iter().enumerate() {
        let (host, bport) = b.rsplit_once(':').expect("host:port");
        list.push_str(&format!(
            "        mcp.backend({{ label = \"b{}\", host = \"{host}\", port = \"{bport}\", \
             connecttimeout = 1, readtimeout = 1, connections = 1 }}),\n",
            i + 1
        ));
    }
    let lua = format!(
        "-- memroute benchmark: memcached's proxy over the benchmark's backends, ketama ring.\n\
         function mcp_config_pools()\n\
         \x20   mcp.backend_connect_timeout(1)\n\
         \x20   mcp.backend_read_timeout(1)\n\
         \x20   mcp.backend_retry_waittime(1)\n\
         \x20   local backends = {{\n{list}    }}\n\
         \x20   return {{ main = mcp.pool(backends, {{ dist = mcp.dist_ring_hash, \
         omode = \"twemproxy\", hash = mcp.dist_ring_hash.hash }}) }}\n\
         end\n\n\
         function mcp_config_routes(pools)\n\
         \x20   local fg = mcp.funcgen_new()\n\
         \x20   local h = fg:new_handle(pools.main)\n\
         \x20   fg:ready({{ n = \"main\", f = function(rctx)\n\
         \x20       return function(r) return rctx:enqueue_and_wait(r, h) end\n\
         \x20   end }})\n\
         \x20   mcp.attach(mcp.CMD_ANY_STORAGE, fg)\n\
         end\n"
    );
    let conf = write(dir, &format!("{name}.lua"), &lua);
    let mut argv = memcached_argv(&exe.display().to_string(), port, threads, 20000, 64);
    argv.extend(["-o".to_string(), format!("proxy_config={}", conf.display())]);
    start(dir, name, &argv, port, layout)
}

fn start(dir: &Path, name: &str, argv: &[String], port: u16, layout: Layout) -> Server {
    let log = dir.join(format!("{name}.log"));
    let mut proc = Proc::spawn(name, argv, layout.servers(), &log);
    procs::wait_listening(&mut proc, port, &log);
    Server {
        proc,
        addr: format!("127.0.0.1:{port}"),
    }
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write config");
    path
}
