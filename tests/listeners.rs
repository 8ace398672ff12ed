//! Several listeners: `[listen]` plus `[[listeners]]` (TCP and Unix sockets), each routing to
//! its own pool, with its own connection limit; reloads that add and remove listeners while
//! another listener is under load.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::{Builder, Client, Memcached, Memroute, poll};

/// A blocking client over a Unix socket, exact bytes like [`Client`].
struct UnixClient(UnixStream);

impl UnixClient {
    fn connect(path: &Path) -> UnixClient {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        UnixClient(s)
    }

    #[track_caller]
    fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.0.write_all(request).expect("write");
        let mut got = vec![0u8; expected.len()];
        self.0.read_exact(&mut got).expect("read reply");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }
}

/// The backends holding `key`, asked directly.
fn holders(backends: &[&Memcached], key: &str) -> Vec<usize> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            let mut c = Client::connect(b.port);
            c.send(format!("mg {key}\r\n").as_bytes());
            c.read_line() == b"HD\r\n"
        })
        .map(|(i, _)| i)
        .collect()
}

fn socket_path(tag: &str) -> PathBuf {
    let dir = common::process::scratch_dir(tag);
    dir.join("memroute.sock")
}

/// Pools `a`, `b`, `c` of one server each; `[listen]` routes every key to `a`.
fn pools(a: &Memcached, b: &Memcached, c: &Memcached) -> Builder {
    Memroute::builder()
        .pool("a", [a])
        .pool("b", [b])
        .pool("c", [c])
        .route("", &["a"])
}

#[test]
fn three_listeners_route_each_to_its_own_pool() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let sock = socket_path("listeners3");
    let proxy = pools(&a, &b, &c)
        .listener("pool = \"b\"")
        .listener_at(
            &format!("unix:{}", sock.display()),
            "mode = 0o660\npool = \"c\"\nmax_connections = 2",
        )
        .start();
    let second = proxy.listener_ports[0];
    let backends = [&a, &b, &c];

    let mut first = Client::connect(proxy.port);
    first.roundtrip(b"set via:first 0 0 1\r\n1\r\n", b"STORED\r\n");
    let mut tcp = Client::connect(second);
    tcp.roundtrip(b"set via:second 0 0 1\r\n2\r\n", b"STORED\r\n");
    let mut unix = UnixClient::connect(&sock);
    unix.roundtrip(b"set via:unix 0 0 1\r\n3\r\n", b"STORED\r\n");
    assert_eq!(holders(&backends, "via:first"), vec![0], "[[routes]] → a");
    assert_eq!(holders(&backends, "via:second"), vec![1], "pool = b");
    assert_eq!(holders(&backends, "via:unix"), vec![2], "pool = c");
    // Each listener reads from its own pool only.
    first.roundtrip(b"get via:unix\r\n", b"END\r\n");
    unix.roundtrip(b"get via:unix\r\n", b"VALUE via:unix 0 1\r\n3\r\nEND\r\n");

    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    // max_connections = 2 on the Unix listener: the third is refused, the TCP ones are not.
    let _second_unix = UnixClient::connect(&sock);
    let mut third = UnixStream::connect(&sock).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut refused = Vec::new();
    third.read_to_end(&mut refused).expect("read refusal");
    assert_eq!(refused, b"SERVER_ERROR too many open connections\r\n");
    tcp.roundtrip(
        b"get via:second\r\n",
        b"VALUE via:second 0 1\r\n2\r\nEND\r\n",
    );
    unix.roundtrip(
        b"version\r\n",
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
}

#[test]
fn reload_adds_and_removes_listeners_without_failing_the_others() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let sock = socket_path("listeners-reload");
    let before = pools(&a, &b, &c).listener("pool = \"b\"");
    let proxy = before.start();
    let (port, removed) = (proxy.port, proxy.listener_ports[0]);

    // Load on the listener that stays: set then get, every reply checked.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let loader = {
        let (stop, done) = (stop.clone(), done.clone());
        thread::spawn(move || {
            let mut c = Client::connect(port);
            let mut i = 0u64;
            // Bounded: at most 200,000 requests, and it stops when told.
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let key = format!("load:{i}");
                c.roundtrip(
                    format!("set {key} 0 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
                    b"STORED\r\n",
                );
                c.roundtrip(
                    format!("get {key}\r\n").as_bytes(),
                    common::value_reply(&key, 0, i.to_string().as_bytes())
                        .into_iter()
                        .chain(*b"END\r\n")
                        .collect::<Vec<u8>>()
                        .as_slice(),
                );
                i += 1;
                done.store(i, Ordering::Relaxed);
            }
        })
    };
    let mut held = Client::connect(removed);
    held.roundtrip(b"set on:removed 0 0 1\r\nx\r\n", b"STORED\r\n");
    poll("load running", || {
        (done.load(Ordering::Relaxed) > 100).then_some(())
    });

    // Reload: the TCP listener with pool b goes, a Unix one with pool c comes.
    let after = pools(&a, &b, &c).listener_at(&format!("unix:{}", sock.display()), "pool = \"c\"");
    proxy.replace_config_with(&after);
    let mut unix = poll("the added Unix listener serves", || {
        let s = UnixStream::connect(&sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(UnixClient(s))
    });
    unix.roundtrip(b"set on:unix 0 0 1\r\ny\r\n", b"STORED\r\n");
    assert_eq!(holders(&[&a, &b, &c], "on:unix"), vec![2]);
    // The removed listener accepts no one, and its session was drained and closed.
    poll("the removed listener refuses", || {
        std::net::TcpStream::connect(("127.0.0.1", removed))
            .is_err()
            .then_some(())
    });
    held.expect_closed();

    // And back: the TCP listener returns, the Unix one goes (its socket file with it).
    let at_start = done.load(Ordering::Relaxed);
    proxy.replace_config_with(&before);
    let mut again = poll("the re-added TCP listener serves", || {
        std::net::TcpStream::connect(("127.0.0.1", removed)).ok()?;
        Some(Client::connect(removed))
    });
    again.roundtrip(
        b"get on:removed\r\n",
        b"VALUE on:removed 0 1\r\nx\r\nEND\r\n",
    );
    poll("the Unix socket file is removed", || {
        (!sock.exists()).then_some(())
    });
    poll("load goes on after the second reload", || {
        (done.load(Ordering::Relaxed) > at_start + 100).then_some(())
    });

    stop.store(true, Ordering::Relaxed);
    // A failed or wrong reply panics the loader thread.
    loader
        .join()
        .expect("every request on the kept listener succeeded");
    assert!(done.load(Ordering::Relaxed) > 200);
}

#[test]
fn listener_mistakes_are_reported_with_line_and_column() {
    let text = "\
[listen]
address = \"127.0.0.1:11311\"

[[listeners]]
address = \"127.0.0.1:11312\"
mode = 0o600
pool = \"mian\"

[[listeners]]
address = \"unix:relative.sock\"

[[listeners]]
address = \"127.0.0.1:11311\"

[[listeners]]
pool = \"main\"

[pools.main]
servers = [\"127.0.0.1:11211\"]
";
    let errors = memroute::config::Config::parse(text, "m.toml")
        .expect_err("invalid")
        .to_string();
    assert_eq!(
        errors,
        "m.toml:6:1: `mode` is for Unix socket listeners (address = \"unix:/path\")\n\
         m.toml:7:8: no pool named `mian`; did you mean `main`?\n\
         m.toml:10:11: `address`: a Unix socket needs an absolute path, found \"relative.sock\" (write \"unix:/run/memroute.sock\")\n\
         m.toml:13:11: listener address `127.0.0.1:11311` is already used at line 2\n\
         m.toml:15:1: [[listeners]] entry without `address`"
    );
}

#[test]
fn listen_table_alone_is_one_listener() {
    let config = memroute::config::Config::parse(
        "[listen]\naddress = \"127.0.0.1:7\"\nmax_connections = 9\n[pools.p]\nservers = [\"127.0.0.1:1\"]\n",
        "x",
    )
    .expect("valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].address.to_string(), "127.0.0.1:7");
    assert_eq!(config.listeners[0].max_connections, 9);
    assert_eq!(config.listeners[0].pool, None);
    // Only [[listeners]]: the default address is not bound as well.
    let config = memroute::config::Config::parse(
        "[[listeners]]\naddress = \"unix:/tmp/x.sock\"\n[pools.p]\nservers = [\"127.0.0.1:1\"]\n",
        "x",
    )
    .expect("valid");
    let addresses: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.address.to_string())
        .collect();
    assert_eq!(addresses, vec!["unix:/tmp/x.sock"]);
}
