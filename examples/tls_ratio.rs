//! The cost of client-side TLS, measured until the benchmark (bench/, benches/loadgen) has its
//! TLS workload: workload (a)'s shape (50 connections, closed loop, get:set 9:1, 100-byte values,
//! 10,000 keys, every reply checked) against a plain and a TLS memroute in front of the same
//! memcached, alternating rounds. Prints req/s and each proxy's CPU time per request (from
//! /proc/PID/stat), and the TLS/plain ratios.
//!
//! ```sh
//! cargo build --release --bin memroute --example tls_ratio
//! # ca.pem, and cert.pem/key.pem signed by it for localhost (e.g. openssl req/x509 -req)
//! memcached -U 0 -l 127.0.0.1 -p 23400 -t 1 &
//! memroute --config plain.toml &   # [listen] address 127.0.0.1:23411, pool [127.0.0.1:23400]
//! memroute --config tls.toml &     # the same on :23412 with tls = { cert, key }
//! target/release/examples/tls_ratio 23411 23412 ca.pem 8 4 PLAIN_PID TLS_PID
//! ```
//! Not a test: nothing here asserts a number (the load generator shares the machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNS: usize = 50;
const KEYS: u32 = 10_000;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let plain: u16 = a[1].parse().unwrap();
    let tls: u16 = a[2].parse().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&a[3]).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let secs: u64 = a[4].parse().unwrap();
    let rounds: usize = a[5].parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = TcpStream::connect(("127.0.0.1", plain)).await.unwrap();
        let value = [b'x'; 100];
        let mut buf = vec![0u8; 64];
        for i in 0..KEYS {
            let mut req = format!("set k{i} 0 0 100\r\n").into_bytes();
            req.extend_from_slice(&value);
            req.extend_from_slice(b"\r\n");
            s.write_all(&req).await.unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"STORED\r\n");
        }
        let pids = [a[6].clone(), a[7].clone()];
        let mut totals = [0u64; 2];
        let mut cpu = [0u64; 2];
        for round in 0..rounds {
            for (k, name) in ["plain", "tls"].iter().enumerate() {
                let before = ticks(&pids[k]);
                let n = run(plain, tls, k == 1, config.clone(), secs).await;
                let used = ticks(&pids[k]) - before;
                totals[k] += n;
                cpu[k] += used;
                println!(
                    "round {round} {name}: {:.0} req/s, {:.2} us CPU/req",
                    n as f64 / secs as f64,
                    used as f64 * 10_000.0 / n as f64
                );
            }
        }
        println!(
            "CPU per request tls/plain = {:.3}",
            (cpu[1] as f64 / totals[1] as f64) / (cpu[0] as f64 / totals[0] as f64)
        );
        println!(
            "tls/plain = {:.3} (plain {:.0} req/s, tls {:.0} req/s, {rounds} rounds of {secs} s)",
            totals[1] as f64 / totals[0] as f64,
            totals[0] as f64 / (secs * rounds as u64) as f64,
            totals[1] as f64 / (secs * rounds as u64) as f64
        );
    });
}

async fn run(
    plain: u16,
    tls: u16,
    use_tls: bool,
    config: Arc<rustls::ClientConfig>,
    secs: u64,
) -> u64 {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let mut tasks = Vec::new();
            let mut streams: Vec<Box<dyn Io>> = Vec::new();
            for _ in 0..CONNS {
                if use_tls {
                    let tcp = TcpStream::connect(("127.0.0.1", tls)).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let name = ServerName::try_from("localhost").unwrap();
                    let s = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .unwrap();
                    streams.push(Box::new(s));
                } else {
                    let tcp = TcpStream::connect(("127.0.0.1", plain)).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    streams.push(Box::new(tcp));
                }
            }
            let end = Instant::now() + Duration::from_secs(secs);
            for (c, s) in streams.into_iter().enumerate() {
                tasks.push(tokio::task::spawn_local(conn(s, c as u32, end)));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        })
        .await
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

async fn conn(mut s: Box<dyn Io>, seed: u32, end: Instant) -> u64 {
    let mut rng = seed.wrapping_mul(2654435761).wrapping_add(1);
    let mut done = 0;
    let mut rbuf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let value = [b'x'; 100];
    while Instant::now() < end {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let key = rng % KEYS;
        let (req, want): (Vec<u8>, &[u8]) = if rng % 10 == 0 {
            let mut r = format!("set k{key} 0 0 100\r\n").into_bytes();
            r.extend_from_slice(&value);
            r.extend_from_slice(b"\r\n");
            (r, b"STORED\r\n")
        } else {
            (format!("get k{key}\r\n").into_bytes(), b"END\r\n")
        };
        s.write_all(&req).await.unwrap();
        s.flush().await.unwrap();
        rbuf.clear();
        while !rbuf.ends_with(want) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed");
            rbuf.extend_from_slice(&chunk[..n]);
        }
        if want == b"END\r\n" {
            assert!(
                rbuf.starts_with(format!("VALUE k{key} 0 100\r\n").as_bytes()),
                "{:?}",
                String::from_utf8_lossy(&rbuf)
            );
        }
        done += 1;
    }
    done
}
