//! TLS on both sides (issue 18): clients → memroute over TLS → memcached over TLS (`-Z`), with
//! certificates made in the test (rcgen). Every memcached here is real; every reply is compared
//! byte for byte.

#[path = "tls/certs.rs"]
mod certs;
#[path = "tls/client.rs"]
mod client;
mod common;
#[path = "tls/memcached.rs"]
mod memcached;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use certs::Ca;
use client::{ClientTls, TlsClient};
use common::memroute::check_config;
use common::process::scratch_dir;
use common::{Builder, Memcached, Memroute, counter, poll, run_ok, sample};

/// A CA, a server certificate for localhost/127.0.0.1, and the files, in a scratch directory.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(what: &str) -> Pki {
        let dir = scratch_dir(what);
        let ca = Ca::new("memroute test CA");
        let ca_file = certs::write(&dir, "ca.pem", &ca.pem());
        let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]).write(&dir, "server");
        Pki {
            dir,
            ca,
            ca_file,
            cert,
            key,
        }
    }

    /// A client that trusts this CA and checks the name `localhost`.
    fn client(&self) -> ClientTls {
        ClientTls::new(&self.ca.pem(), "localhost", None)
    }

    /// `cert = "…", key = "…"` of the server certificate, for a listener's `tls = { … }`.
    fn server_files(&self) -> String {
        format!("cert = {:?}, key = {:?}", path(&self.cert), path(&self.key))
    }

    /// `tls = { ca = "…"{more} }`: a pool that trusts this CA.
    fn pool_tls(&self, more: &str) -> String {
        format!("tls = {{ ca = {:?}{more} }}", path(&self.ca_file))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// memroute with a TLS listener (`listen_tls` inside its braces), an admin port, and one pool
/// `main` of `servers` with `pool_extra` lines.
fn tls_memroute<S: ToString>(
    listen_tls: &str,
    servers: impl IntoIterator<Item = S>,
    pool_extra: &str,
) -> Builder {
    Memroute::builder()
        .listen(&format!("tls = {{ {listen_tls} }}"))
        .admin()
        .pool_with("main", servers, pool_extra)
}

fn client_failures(m: &Memroute, reason: &str) -> f64 {
    counter(
        &m.metrics(),
        "memroute_client_tls_handshake_failures_total",
        &[("reason", reason)],
    )
}

/// memroute in front of two `memcached -Z`, TLS on both sides.
struct Setup {
    pki: Pki,
    backends: Vec<Memcached>,
    memroute: Memroute,
}

fn tls_both_sides(listen_extra: &str) -> Setup {
    let pki = Pki::new("tls-both");
    let check = pki.client();
    let backends: Vec<Memcached> = (0..2)
        .map(|_| memcached::start(&pki.cert, &pki.key, Some(&check)))
        .collect();
    let listen = format!("{}{listen_extra}", pki.server_files());
    let memroute = tls_memroute(&listen, &backends, &pki.pool_tls("")).start();
    Setup {
        pki,
        backends,
        memroute,
    }
}

#[test]
fn every_classic_command_over_tls_to_memroute_and_to_memcached() {
    let s = tls_both_sides("");
    let mut c = TlsClient::open(s.memroute.port, &s.pki.client());
    c.roundtrips(rows![
        b"set k1 5 0 3\r\nabc\r\n" => b"STORED\r\n",
        b"get k1\r\n" => b"VALUE k1 5 3\r\nabc\r\nEND\r\n",
        b"add k1 0 0 1\r\nx\r\n" => b"NOT_STORED\r\n",
        b"add k2 0 0 2\r\nxy\r\n" => b"STORED\r\n",
        b"replace k2 1 0 2\r\nzz\r\n" => b"STORED\r\n",
        b"replace nope 0 0 1\r\nz\r\n" => b"NOT_STORED\r\n",
        b"append k1 0 0 2\r\nde\r\n" => b"STORED\r\n",
        b"prepend k1 0 0 2\r\n<<\r\n" => b"STORED\r\n",
        b"get k1 k2 nope\r\n" => b"VALUE k1 5 7\r\n<<abcde\r\nVALUE k2 1 2\r\nzz\r\nEND\r\n",
    ]);
    // gets / cas: the token from memcached works through the proxy; a stale one is refused.
    let cas = c.gets_cas("k2");
    let gets = format!("VALUE k2 1 2 {cas}\r\nzz\r\nEND\r\n");
    let cas_with = |value: &str| format!("cas k2 0 0 1 {cas}\r\n{value}\r\n");
    let (fresh, stale) = (cas_with("q"), cas_with("r"));
    c.roundtrips(rows![
        b"gets k2\r\n" => gets.as_bytes(),
        fresh.as_bytes() => b"STORED\r\n",
        stale.as_bytes() => b"EXISTS\r\n",
        b"cas nope 0 0 1 1\r\nr\r\n" => b"NOT_FOUND\r\n",
        b"set n 0 0 2\r\n10\r\n" => b"STORED\r\n",
        b"incr n 5\r\n" => b"15\r\n",
        // memcached rewrites a counter in place: "15" decremented to 0 is stored as "0 ".
        b"decr n 20\r\n" => b"0\r\n",
        b"incr k1 1\r\n" => b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        b"touch n 100\r\n" => b"TOUCHED\r\n",
        b"touch nope 100\r\n" => b"NOT_FOUND\r\n",
        b"gat 100 n\r\n" => b"VALUE n 0 2\r\n0 \r\nEND\r\n",
    ]);
    // gats shows the cas unique gets does (touching does not change it).
    let gats = format!("VALUE n 0 2 {}\r\n0 \r\nEND\r\n", c.gets_cas("n"));
    c.roundtrips(rows![
        b"gats 100 n\r\n" => gats.as_bytes(),
        b"delete n\r\n" => b"DELETED\r\n",
        b"delete n\r\n" => b"NOT_FOUND\r\n",
        b"set q 0 0 1 noreply\r\nq\r\nget q\r\n" => b"VALUE q 0 1\r\nq\r\nEND\r\n",
        b"verbosity 1\r\n" => b"OK\r\n",
    ]);
    c.send(b"version\r\n");
    assert!(c.read_line().starts_with(b"VERSION "));
    c.roundtrip(b"bogus\r\n", b"ERROR\r\n");
    // Pipelined: 200 requests in one write over keys of both servers, answered in order.
    let keys = common::keys("pipe", 100);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for k in &keys {
        req.extend_from_slice(&common::storage("set", k, 0, 0, k.as_bytes(), ""));
        want.extend_from_slice(b"STORED\r\n");
    }
    for k in &keys {
        req.extend_from_slice(format!("get {k}\r\n").as_bytes());
        want.extend_from_slice(&common::value_reply(k, 0, k.as_bytes()));
        want.extend_from_slice(b"END\r\n");
    }
    c.roundtrip(&req, &want);
    // A value larger than a TLS record (16 KiB) both ways.
    let big: Vec<u8> = (0..600_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    c.roundtrip(
        &common::storage("set", "big", 3, 0, &big, ""),
        b"STORED\r\n",
    );
    let mut want = format!("VALUE big 3 {}\r\n", big.len()).into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\nEND\r\n");
    c.roundtrip(b"get big\r\n", &want);
    // Both backends were used, over TLS (a plain connection to them would fail).
    let text = s.memroute.metrics();
    for b in &s.backends {
        let n = sample(
            &text,
            "memroute_backend_requests_total",
            &[("server", &b.addr())],
        );
        assert!(n.unwrap_or(0.0) > 0.0, "no requests reached {}", b.addr());
        let tls = sample(
            &text,
            "memroute_backend_errors_total",
            &[("server", &b.addr()), ("kind", "tls")],
        );
        assert_eq!(tls, Some(0.0));
    }
    c.roundtrip(b"quit\r\n", b"");
}

#[test]
fn mtls_refuses_clients_without_a_certificate_of_the_ca_and_accepts_one() {
    let pki = Pki::new("tls-mtls");
    let clients_ca = Ca::new("clients CA");
    let clients_ca_file = certs::write(&pki.dir, "clients-ca.pem", &clients_ca.pem());
    let backend = common::Memcached::start();
    let listen = format!(
        "{}, client_ca = {:?}",
        pki.server_files(),
        path(&clients_ca_file)
    );
    let m = tls_memroute(&listen, [&backend], "").start();

    // No certificate: refused, counted as such.
    let mut anonymous = TlsClient::open(m.port, &pki.client());
    anonymous.refused(b"version\r\n").unwrap();
    poll("no_client_certificate counted", || {
        (client_failures(&m, "no_client_certificate") == 1.0).then_some(())
    });

    // A certificate of another CA: refused.
    let stranger = Ca::new("someone else").issue(&["app"]);
    let tls = ClientTls::new(
        &pki.ca.pem(),
        "localhost",
        Some((&stranger.cert_pem, &stranger.key_pem)),
    );
    let mut other = TlsClient::open(m.port, &tls);
    other.refused(b"version\r\n").unwrap();
    poll("bad_client_certificate counted", || {
        (client_failures(&m, "bad_client_certificate") == 1.0).then_some(())
    });

    // Signed by the configured CA: served.
    let app = clients_ca.issue(&["app"]);
    let tls = ClientTls::new(
        &pki.ca.pem(),
        "localhost",
        Some((&app.cert_pem, &app.key_pem)),
    );
    let mut ok = TlsClient::open(m.port, &tls);
    ok.roundtrip(
        b"set a 0 0 1\r\nx\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    );
    assert_eq!(client_failures(&m, "no_client_certificate"), 1.0);
}

#[test]
fn a_backend_whose_certificate_does_not_match_is_refused_with_a_clear_error_and_counted() {
    let pki = Pki::new("tls-mismatch");
    // Signed by the trusted CA, but for another name than the one memroute checks (127.0.0.1).
    let (cert, key) = pki.ca.issue(&["other.example"]).write(&pki.dir, "other");
    let backend = memcached::start(&cert, &key, None);
    let pool = format!(
        "{}\nfailure_limit = 1000\nconnections = 1",
        pki.pool_tls("")
    );
    let m = tls_memroute(&pki.server_files(), [&backend], &pool).start();
    let mut c = TlsClient::open(m.port, &pki.client());
    for _ in 0..5 {
        c.roundtrip(
            b"set k 0 0 1\r\nx\r\n",
            b"SERVER_ERROR backend TLS handshake failed\r\n",
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    let tls_errors = counter(
        &m.metrics(),
        "memroute_backend_errors_total",
        &[("server", &backend.addr()), ("kind", "tls")],
    );
    assert!(tls_errors >= 2.0, "tls errors counted: {tls_errors}");
    let log = m.stderr();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backend TLS handshake failed"))
        .collect();
    // Logged once for the burst, and it says what is wrong.
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(
        warned[0].contains("not valid for name") && warned[0].contains("127.0.0.1"),
        "{}",
        warned[0]
    );
}

#[test]
fn a_backend_that_requires_a_client_certificate_gets_the_pools_one() {
    let pki = Pki::new("tls-backend-mtls");
    let clients_ca = Ca::new("backend clients CA");
    let clients_ca_file = certs::write(&pki.dir, "clients-ca.pem", &clients_ca.pem());
    let (client_cert, client_key) = clients_ca.issue(&["memroute"]).write(&pki.dir, "client");
    let extra = format!(",ssl_verify_mode=2,ssl_ca_cert={}", path(&clients_ca_file));
    let with_identity = ClientTls::new(
        &pki.ca.pem(),
        "localhost",
        Some((
            &std::fs::read_to_string(&client_cert).unwrap(),
            &std::fs::read_to_string(&client_key).unwrap(),
        )),
    );
    let backend = memcached::start_with(&pki.cert, &pki.key, &extra, Some(&with_identity));
    // SNI and the name check use `server_name` instead of the address's 127.0.0.1.
    let with_cert = pki.pool_tls(&format!(
        ", server_name = \"localhost\", cert = {:?}, key = {:?}",
        path(&client_cert),
        path(&client_key)
    ));
    let m = tls_memroute(
        &pki.server_files(),
        [&backend],
        &format!("{with_cert}\nfailure_limit = 1000"),
    )
    .start();
    let mut c = TlsClient::open(m.port, &pki.client());
    c.roundtrip(
        b"set a 0 0 1\r\nx\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    );
    drop(m);

    // Without the client certificate memcached refuses the connection (with TLS 1.3 after the
    // handshake, on the first read), and that is a TLS failure too.
    let without = format!("{}\nfailure_limit = 1000", pki.pool_tls(""));
    let m = tls_memroute(&pki.server_files(), [&backend], &without).start();
    let mut c = TlsClient::open(m.port, &pki.client());
    c.roundtrip(
        b"get a\r\n",
        b"SERVER_ERROR backend TLS handshake failed\r\n",
    );
    let log = m.stderr();
    assert!(
        log.contains("backend TLS handshake failed")
            && log.contains("the server ended the TLS session"),
        "{log}"
    );
    let tls_errors = sample(
        &m.metrics(),
        "memroute_backend_errors_total",
        &[("server", &backend.addr()), ("kind", "tls")],
    );
    assert!(tls_errors >= Some(1.0), "{tls_errors:?}");
}

#[test]
fn replaced_certificate_files_serve_new_connections_and_old_ones_keep_working() {
    let s = tls_both_sides("");
    let m = &s.memroute;
    let client = s.pki.client();
    let first = s.pki.ca.issue(&["localhost", "127.0.0.1"]);
    let mut old = TlsClient::open(m.port, &client);
    let old_cert = old.server_cert();
    assert_ne!(old_cert, first.der);
    old.roundtrip(b"set k 0 0 1\r\na\r\n", b"STORED\r\n");

    // A client that keeps working through the swap on fresh connections and on one old one.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, done, client, port) = (stop.clone(), done.clone(), client.clone(), m.port);
        std::thread::spawn(move || {
            let mut steady = TlsClient::open(port, &client);
            while !stop.load(Ordering::Relaxed) {
                steady.roundtrip(
                    b"set w 0 0 1\r\nw\r\nget w\r\n",
                    b"STORED\r\nVALUE w 0 1\r\nw\r\nEND\r\n",
                );
                let mut fresh = TlsClient::open(port, &client);
                fresh.roundtrip(b"get w\r\n", b"VALUE w 0 1\r\nw\r\nEND\r\n");
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Key first, then the certificate, with a pause longer than the watcher's debounce, as a
    // careless deploy would: the mismatched pair is refused and the old certificate stays.
    let not_reloaded = || m.stderr().matches("TLS certificates not reloaded").count();
    certs::replace(&s.pki.key, &first.key_pem);
    poll("the mismatched pair is refused", || {
        (not_reloaded() >= 1).then_some(())
    });
    assert_eq!(TlsClient::open(m.port, &client).server_cert(), old_cert);
    certs::replace(&s.pki.cert, &first.cert_pem);
    poll("new connections present the new certificate", || {
        (TlsClient::open(m.port, &client).server_cert() == first.der).then_some(())
    });
    old.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\na\r\nEND\r\n");

    // A broken certificate file: logged, the current certificate stays.
    let refusals = not_reloaded();
    certs::replace(
        &s.pki.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    poll("the bad file is reported", || {
        (not_reloaded() > refusals).then_some(())
    });
    assert_eq!(TlsClient::open(m.port, &client).server_cert(), first.der);

    // SIGHUP re-reads the files too.
    let second = s.pki.ca.issue(&["localhost"]);
    std::fs::write(&s.pki.key, &second.key_pem).unwrap();
    std::fs::write(&s.pki.cert, &second.cert_pem).unwrap();
    m.signal("HUP");
    poll("the certificate after SIGHUP", || {
        (TlsClient::open(m.port, &client).server_cert() == second.der).then_some(())
    });

    let before = done.load(Ordering::Relaxed);
    poll("the worker goes on", || {
        (done.load(Ordering::Relaxed) > before).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("no request failed during the swaps");
    assert!(done.load(Ordering::Relaxed) > 0);
    old.roundtrip(b"get k\r\n", b"VALUE k 0 1\r\na\r\nEND\r\n");
    assert_eq!(old.server_cert(), old_cert);
}

#[test]
fn a_config_reload_naming_a_bad_certificate_is_rejected_and_the_old_one_keeps_serving() {
    let s = tls_both_sides("");
    let m = &s.memroute;
    let text = std::fs::read_to_string(&m.config_path).unwrap();
    let missing = s.pki.dir.join("missing.pem");
    let bad = text.replace(&path(&s.pki.cert), &path(&missing));
    m.replace_config(&bad);
    let (line, column) = bad
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(&path(&missing)).map(|c| (i + 1, c)))
        .unwrap();
    // The value's opening quote, 1-based.
    let want = format!(
        "{}:{line}:{column}: `tls`: {}: cannot read: No such file or directory (os error 2)",
        m.config_path.display(),
        missing.display()
    );
    poll("the reload is rejected", || {
        m.stderr().contains(&want).then_some(())
    });
    let mut c = TlsClient::open(m.port, &s.pki.client());
    c.roundtrip(
        b"set a 0 0 1\r\nx\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    );

    // `--check-config` reports the same, and a key that is not the certificate's.
    let other = s.pki.ca.issue(&["localhost"]);
    let (_, other_key) = other.write(&s.pki.dir, "other");
    let wrong_key = text.replace(&path(&s.pki.key), &path(&other_key));
    let file = s.pki.dir.join("wrong-key.toml");
    std::fs::write(&file, &wrong_key).unwrap();
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "`tls`: {}: is not the key of the certificate in {}",
            other_key.display(),
            s.pki.cert.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_stuck_handshake_times_out_and_frees_its_slot_and_plain_clients_are_counted() {
    let s = tls_both_sides(", handshake_timeout = \"300ms\"");
    let m = &s.memroute;
    let protocol_before = client_failures(m, "protocol");
    // A client that connects and says nothing is closed after the handshake timeout.
    let mut silent = common::Client::connect(m.port);
    silent.expect_closed();
    assert_eq!(client_failures(m, "timeout"), 1.0);
    // A plain memcached client on the TLS port: closed, counted as not TLS.
    let mut plain = common::Client::connect(m.port);
    plain.send(b"get k\r\n");
    // rustls answers with a TLS alert record (content type 0x15), then closes.
    let alert = plain.read_available(Duration::from_millis(500));
    assert!(alert.is_empty() || alert[0] == 0x15, "{alert:?}");
    plain.expect_closed();
    poll("protocol failure counted", || {
        (client_failures(m, "protocol") == protocol_before + 1.0).then_some(())
    });
    poll("no connection is held", || {
        (m.sample("memroute_client_connections", &[]) == Some(0.0)).then_some(())
    });
    // And a real TLS client is still served (TLS 1.3 by default, 1.2 offered too).
    let mut c = TlsClient::open(m.port, &s.pki.client());
    assert_eq!(c.version(), "Some(TLSv1_3)");
    c.roundtrip(
        b"version\r\n",
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
}

#[test]
fn pymemcache_with_tls_context_runs_set_get_cas_delete() {
    let s = tls_both_sides("");
    let script = r#"
import ssl, sys
from pymemcache.client.base import Client
ctx = ssl.create_default_context(cafile=sys.argv[2])
c = Client(("127.0.0.1", int(sys.argv[1])), tls_context=ctx, connect_timeout=5, timeout=5)
assert c.set("py", b"one") is True
assert c.get("py") == b"one"
value, token = c.gets("py")
assert value == b"one", value
assert c.cas("py", b"two", token) is True
assert c.cas("py", b"three", token) is False
assert c.get("py") == b"two"
assert c.delete("py") is True
assert c.get("py") is None
print("ok", c.version().decode())
"#;
    let (stdout, _) = run_ok(
        "python3 (scripts/deps.sh installs pymemcache)",
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(s.memroute.port.to_string())
            .arg(&s.pki.ca_file),
    );
    assert_eq!(stdout.trim(), format!("ok {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_plain_and_a_tls_listener_side_by_side() {
    let pki = Pki::new("tls-side-by-side");
    let backend = Memcached::start();
    // [listen] has no tls: its address is plain; one [[listeners]] entry has its own.
    let m = Memroute::builder()
        .listener(&format!("tls = {{ {} }}", pki.server_files()))
        .admin()
        .pool("main", [&backend])
        .start();
    let tls = m.listener_ports[0];
    let mut c = common::Client::connect(m.port);
    c.roundtrip(b"set a 0 0 1\r\nx\r\n", b"STORED\r\n");
    let mut t = TlsClient::open(tls, &pki.client());
    t.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    // The TLS listener refuses plain clients (a TLS alert, then close).
    let protocol = client_failures(&m, "protocol");
    let mut wrong = common::Client::connect(tls);
    wrong.send(b"get a\r\n");
    let alert = wrong.read_available(Duration::from_millis(500));
    assert!(alert.is_empty() || alert[0] == 0x15, "{alert:?}");
    poll("counted", || {
        (client_failures(&m, "protocol") > protocol).then_some(())
    });
    drop(m);

    // With [listen] tls, `tls = false` makes one [[listeners]] entry plain.
    let m = Memroute::builder()
        .listen(&format!("tls = {{ {} }}", pki.server_files()))
        .listener("tls = false")
        .pool("main", [&backend])
        .start();
    let plain_too = m.listener_ports[0];
    let mut t = TlsClient::open(m.port, &pki.client());
    t.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
    let mut c = common::Client::connect(plain_too);
    c.roundtrip(b"get a\r\n", b"VALUE a 0 1\r\nx\r\nEND\r\n");
}
