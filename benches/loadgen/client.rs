//! The worker process: the load generator proper. It runs one [`Job`] on a single-threaded tokio
//! runtime (it is pinned to its own core; one thread is the cheapest way to drive many sockets
//! from one core) and prints its result as one JSON line.
//!
//! The load is closed-loop: each connection writes a batch of `depth` requests, reads and checks
//! every reply, records each request's latency (from the write to the moment its reply was
//! complete), and only then writes the next batch. A request counts if its reply completed inside
//! the measured window, which starts after every connection is open and a warm-up has passed.

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::hist::Histogram;
use crate::procs;
use crate::reply::{self, Expect, Keyspace, Parsed};
use crate::workload::{self, FillResult, Job, LoadResult, LoadSpec, Proto};

/// How long past the window a connection may take to finish its last batch before it is
/// abandoned and counted as failed. Bounds the run even if a target hangs.
const GRACE: Duration = Duration::from_secs(10);
/// Connections opened at once (listen backlogs are 512–1024).
const CONNECT_PARALLEL: usize = 200;

/// Runs the job given as JSON and prints its result.
pub fn main(json: &str) {
    crate::hist::self_check();
    reply::self_check();
    let job: Job = serde_json::from_str(json).expect("worker job JSON");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    match job {
        Job::Load(spec) => {
            let result = local.block_on(&rt, load(spec));
            println!("{}", serde_json::to_string(&result).expect("JSON"));
        }
        Job::Fill {
            addr,
            keys,
            value_size,
            gap,
        } => {
            let result = local.block_on(&rt, fill(&addr, keys, value_size, gap));
            println!("{}", serde_json::to_string(&result).expect("JSON"));
        }
        Job::Hold {
            addr,
            conns,
            value_size,
        } => {
            let (streams, failed) = local.block_on(&rt, hold(&addr, conns, value_size));
            println!("READY {} {failed}", streams.len());
            std::io::stdout().flush().expect("stdout");
            // Keep them open until the orchestrator closes our stdin.
            let mut line = String::new();
            while std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
                line.clear();
            }
            local.block_on(&rt, async move { drop(streams) });
            println!("CLOSED");
        }
    }
}

/// Counters shared by the connections of one run (single thread: `Rc<RefCell>`).
struct Stats {
    hist: Histogram,
    result: LoadResult,
    /// Requests in the window, per connection that ran to the end.
    per_conn: Vec<u64>,
}

impl Stats {
    fn error(&mut self, e: String) {
        self.result.errors += 1;
        self.result.first_error.get_or_insert(e);
    }
}

async fn load(spec: LoadSpec) -> LoadResult {
    let ks = Rc::new(Keyspace::new(spec.keys, spec.value_size));
    let stats = Rc::new(RefCell::new(Stats {
        hist: Histogram::new(),
        result: LoadResult::default(),
        per_conn: Vec::new(),
    }));
    let tls = spec.tls_ca.as_deref().map(tls_connector);
    let streams = connect_all(&spec.addrs, spec.conns, tls).await;
    let start = Instant::now() + Duration::from_millis(spec.warmup_ms);
    let end = start + Duration::from_millis(spec.measure_ms);

    // CPU time is sampled from a plain thread so that busy connections cannot delay it.
    let mut watch = spec.watch.clone();
    watch.push(workload::Watch {
        label: "loadgen".into(),
        pids: vec![std::process::id()],
    });
    let clk_tck = spec.clk_tck as f64;
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        let before: Vec<u64> = watch.iter().map(|w| procs::cpu_ticks(&w.pids)).collect();
        let t0 = Instant::now();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let after: Vec<u64> = watch.iter().map(|w| procs::cpu_ticks(&w.pids)).collect();
        let secs = t0.elapsed().as_secs_f64();
        let cpu: Vec<(String, f64)> = watch
            .iter()
            .zip(before.iter().zip(&after))
            .map(|(w, (b, a))| (w.label.clone(), a.saturating_sub(*b) as f64 / clk_tck))
            .collect();
        (cpu, secs)
    });

    let mut handles = Vec::new();
    for (id, stream) in streams.into_iter().enumerate() {
        let Some(stream) = stream else {
            stats.borrow_mut().result.failed_conns += 1;
            continue;
        };
        let conn = Conn {
            spec: spec.clone(),
            ks: ks.clone(),
            stats: stats.clone(),
            rng: fastrand::Rng::with_seed(
                spec.seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            start,
            end,
            done: 0,
        };
        handles.push(tokio::task::spawn_local(conn.run(stream)));
    }
    let deadline = tokio::time::Instant::from_std(end + GRACE);
    for mut h in handles {
        if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
            h.abort();
            let mut s = stats.borrow_mut();
            s.result.failed_conns += 1;
            s.result
                .first_error
                .get_or_insert_with(|| "no reply for 10 s after the window".into());
        }
    }
    let (cpu, secs) = sampler.join().expect("sampler thread");
    let mut s = stats.borrow_mut();
    let hist = &s.hist;
    let (p50, p99, p999) = (
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.quantile(0.999),
    );
    debug_assert_eq!(hist.len(), s.result.requests);
    let mut result = std::mem::take(&mut s.result);
    result.secs = secs;
    result.p50_us = p50 as f64 / 1e3;
    result.p99_us = p99 as f64 / 1e3;
    result.p999_us = p999 as f64 / 1e3;
    result.cpu = cpu;
    // Fairness: the slowest connection against the average one.
    if let Some(&min) = s.per_conn.iter().min() {
        let mean = s.per_conn.iter().sum::<u64>() as f64 / s.per_conn.len() as f64;
        result.slowest_conn_pct = min as f64 * 100.0 / mean.max(1.0);
    }
    result
}

/// One client connection of a load run.
struct Conn {
    spec: LoadSpec,
    ks: Rc<Keyspace>,
    stats: Rc<RefCell<Stats>>,
    rng: fastrand::Rng,
    start: Instant,
    end: Instant,
    /// Requests of this connection inside the window.
    done: u64,
}

impl Conn {
    async fn run(mut self, stream: Stream) {
        match stream {
            Stream::Tcp(s) => self.drive(s).await,
            Stream::Tls(s) => self.drive(s).await,
        }
        self.stats.borrow_mut().per_conn.push(self.done);
    }

    /// The closed loop over any byte stream (a TLS stream for the TLS workload slot, too).
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(&mut self, mut stream: S) {
        let depth = self.spec.depth.max(1);
        let mut wbuf: Vec<u8> = Vec::with_capacity(depth * 256);
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut expects: Vec<Expect> = Vec::with_capacity(depth);
        let mut asked: Vec<u32> = Vec::with_capacity(depth * self.spec.mget.max(1));
        while Instant::now() < self.end {
            wbuf.clear();
            expects.clear();
            asked.clear();
            for _ in 0..depth {
                let e = self.request(&mut wbuf, &mut asked);
                expects.push(e);
            }
            let sent = Instant::now();
            // The flush is free on TCP; a TLS stream sends its buffered record then.
            if let Err(e) = stream.write_all(&wbuf).await.and(stream.flush().await) {
                return self.fail(format!("write: {e}"));
            }
            for &expect in &expects {
                loop {
                    match reply::check(&rbuf, expect, &asked, &self.ks) {
                        Parsed::Incomplete => match stream.read_buf(&mut rbuf).await {
                            Ok(0) => return self.fail("connection closed by the target".into()),
                            Ok(_) => {}
                            Err(e) => return self.fail(format!("read: {e}")),
                        },
                        Parsed::Desync(e) => return self.fail(e),
                        Parsed::Done { len, hits, error } => {
                            rbuf.advance(len);
                            self.count(sent, expect, hits, error);
                            break;
                        }
                    }
                }
            }
            if !rbuf.is_empty() {
                return self.fail("bytes after the last reply of a batch".into());
            }
        }
    }

    /// Appends one request to `wbuf` and says what it expects.
    fn request(&mut self, wbuf: &mut Vec<u8>, asked: &mut Vec<u32>) -> Expect {
        let spec = &self.spec;
        if self.rng.u32(0..100) < spec.set_percent {
            let mut i = self.rng.u32(0..spec.keys);
            while workload::in_gap(i, spec.gap) {
                i = self.rng.u32(0..spec.keys);
            }
            if spec.proto == Proto::Classic {
                self.ks.push_set(i, wbuf);
                return Expect::Stored;
            }
            self.ks.push_ms(i, wbuf);
            return Expect::MetaStored;
        }
        let from = asked.len();
        // A meta `mg` has one key; `mget` keys make one `get`, or one batch of quiet `mg`s.
        let n = if spec.proto == Proto::Meta {
            1
        } else {
            spec.mget.max(1)
        };
        while asked.len() - from < n {
            let i = self.rng.u32(0..spec.keys);
            if asked[from..].contains(&i) {
                continue; // distinct keys: duplicates would make the expected reply ambiguous
            }
            asked.push(i);
        }
        match spec.proto {
            Proto::Classic => {
                wbuf.extend_from_slice(b"get");
                for &i in &asked[from..] {
                    wbuf.push(b' ');
                    wbuf.extend_from_slice(self.ks.key(i));
                }
                wbuf.extend_from_slice(b"\r\n");
                Expect::Values {
                    from,
                    to: asked.len(),
                }
            }
            Proto::Meta => {
                wbuf.extend_from_slice(b"mg ");
                wbuf.extend_from_slice(self.ks.key(asked[from]));
                wbuf.extend_from_slice(b" f v\r\n");
                Expect::MetaValue { at: from }
            }
            Proto::MetaQuiet => {
                for &i in &asked[from..] {
                    wbuf.extend_from_slice(b"mg ");
                    wbuf.extend_from_slice(self.ks.key(i));
                    wbuf.extend_from_slice(b" k f v q\r\n");
                }
                wbuf.extend_from_slice(b"mn\r\n");
                Expect::MetaQuiet {
                    from,
                    to: asked.len(),
                }
            }
        }
    }

    fn count(&mut self, sent: Instant, expect: Expect, hits: u32, error: Option<String>) {
        let now = Instant::now();
        if now < self.start || now >= self.end {
            return;
        }
        self.done += 1;
        let mut s = self.stats.borrow_mut();
        s.hist.record(now.duration_since(sent).as_nanos() as u64);
        s.result.requests += 1;
        let asked = match expect {
            Expect::Values { from, to } | Expect::MetaQuiet { from, to } => to - from,
            Expect::MetaValue { .. } => 1,
            Expect::Stored | Expect::Deleted | Expect::MetaStored => 0,
        };
        s.result.keys_asked += asked as u64;
        s.result.keys_missed += (asked as u64).saturating_sub(u64::from(hits));
        if let Some(e) = error {
            s.error(e);
        }
    }

    fn fail(&self, e: String) {
        let mut s = self.stats.borrow_mut();
        s.result.failed_conns += 1;
        s.result.first_error.get_or_insert(e);
    }
}

/// A load connection: plain, or TLS (workload k).
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A TLS client that trusts only the CA in `ca` (PEM).
fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Opens `n` connections, `i` to `addrs[i % len]`, a bounded number at a time, with a TLS
/// handshake when `tls` is given (before the warm-up, so the window measures requests only);
/// `None` for those that could not be opened.
async fn connect_all(
    addrs: &[String],
    n: usize,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Vec<Option<Stream>> {
    let gate = Rc::new(Semaphore::new(CONNECT_PARALLEL));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()].clone();
            let gate = gate.clone();
            let tls = tls.clone();
            tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await.expect("never closed");
                let tcp = connect(&addr).await?;
                let Some(tls) = tls else {
                    return Some(Stream::Tcp(tcp));
                };
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let handshake = tls.connect(name, tcp);
                match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                    Ok(Ok(s)) => Some(Stream::Tls(Box::new(s))),
                    _ => None,
                }
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(n);
    for h in handles {
        streams.push(h.await.ok().flatten());
    }
    streams
}

/// Connects with a few retries (a full listen backlog refuses or drops SYNs for a moment).
async fn connect(addr: &str) -> Option<TcpStream> {
    for attempt in 0..20 {
        let c = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
        if let Ok(Ok(s)) = c {
            let _ = s.set_nodelay(true);
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
    }
    None
}

/// Stores every key outside the gap and deletes the gap, 100 requests per write.
async fn fill(addr: &str, keys: u32, value_size: usize, gap: u32) -> FillResult {
    let ks = Keyspace::new(keys, value_size);
    let mut result = FillResult {
        stored: 0,
        deleted: 0,
        errors: 0,
    };
    let Some(mut stream) = connect(addr).await else {
        result.errors = u64::from(keys);
        return result;
    };
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let all: Vec<u32> = (0..keys).collect();
    for chunk in all.chunks(100) {
        let mut wbuf = Vec::new();
        let mut expects = Vec::new();
        for &i in chunk {
            if workload::in_gap(i, gap) {
                wbuf.extend_from_slice(b"delete ");
                wbuf.extend_from_slice(ks.key(i));
                wbuf.extend_from_slice(b"\r\n");
                expects.push(Expect::Deleted);
            } else {
                ks.push_set(i, &mut wbuf);
                expects.push(Expect::Stored);
            }
        }
        let io = async {
            stream.write_all(&wbuf).await?;
            for &expect in &expects {
                loop {
                    match reply::check(&rbuf, expect, &[], &ks) {
                        Parsed::Incomplete => {
                            if stream.read_buf(&mut rbuf).await? == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                        }
                        Parsed::Desync(e) => return Err(std::io::Error::other(e)),
                        Parsed::Done { len, error, .. } => {
                            rbuf.advance(len);
                            match (error, expect) {
                                (Some(_), _) => result.errors += 1,
                                (None, Expect::Deleted) => result.deleted += 1,
                                (None, _) => result.stored += 1,
                            }
                            break;
                        }
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        };
        if tokio::time::timeout(Duration::from_secs(10), io)
            .await
            .is_err()
        {
            result.errors += chunk.len() as u64;
            return result;
        }
    }
    result
}

/// Opens `n` idle connections, each after one checked `get` of key 1 (so the target has really
/// set the session up, buffers included). Returns them and the number that failed.
async fn hold(addr: &str, n: usize, value_size: usize) -> (Vec<TcpStream>, usize) {
    let ks = Rc::new(Keyspace::new(2, value_size));
    let gate = Rc::new(Semaphore::new(CONNECT_PARALLEL));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (addr, gate, ks) = (addr.to_string(), gate.clone(), ks.clone());
            tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await.expect("never closed");
                let mut s = connect(&addr).await?;
                let mut wbuf = b"get ".to_vec();
                wbuf.extend_from_slice(ks.key(1));
                wbuf.extend_from_slice(b"\r\n");
                let mut rbuf = BytesMut::with_capacity(1024);
                let expect = Expect::Values { from: 0, to: 1 };
                let io = async {
                    s.write_all(&wbuf).await.ok()?;
                    loop {
                        match reply::check(&rbuf, expect, &[1], &ks) {
                            Parsed::Incomplete => {
                                if s.read_buf(&mut rbuf).await.ok()? == 0 {
                                    return None;
                                }
                            }
                            // A hit or a miss (workload e deletes some keys): either is right.
                            Parsed::Done { error: None, .. } => return Some(()),
                            _ => return None,
                        }
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), io)
                    .await
                    .ok()??;
                Some(s)
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(n);
    let mut failed = 0;
    for h in handles {
        match h.await.ok().flatten() {
            Some(s) => streams.push(s),
            None => failed += 1,
        }
    }
    (streams, failed)
}
