//! `memroute import-nutcracker` (DESIGN §5): a real twemproxy config becomes a memroute config
//! that passes `--check-config` and puts every key on the server nutcracker put it on, checked
//! against a live nutcracker on every pool's address (TCP and Unix socket); what memroute
//! cannot do is refused clearly.

mod common;
mod config_support;

use std::path::Path;
use std::process::Output;

use common::memroute::{check_config_ok, command};
use common::process::{scratch_dir, write_file as write};
use common::{Client, Memcached, Memroute, Nutcracker, free_port};

fn import(yaml: &Path, pool: Option<&str>) -> Output {
    let mut cmd = command();
    cmd.arg("import-nutcracker").arg(yaml);
    if let Some(pool) = pool {
        cmd.args(["--pool", pool]);
    }
    cmd.output().expect("run memroute import-nutcracker")
}

/// [`import`], asserting it exits 0: the TOML it printed.
#[track_caller]
fn import_ok(yaml: &Path, pool: Option<&str>) -> String {
    common::assert_success("memroute import-nutcracker", &import(yaml, pool)).0
}

/// Number of items a memcached holds (`STAT curr_items`).
fn items(backend: &Memcached) -> usize {
    Client::connect(backend.port).stat("curr_items") as usize
}

/// Replaces the `[listen] address` of imported TOML with `127.0.0.1:port`.
fn relisten(toml: &str, port: u16) -> String {
    let (head, rest) = toml.split_once("[listen]\n").expect("a [listen] table");
    let (line, tail) = rest.split_once('\n').unwrap();
    assert!(line.starts_with("address = "), "{line}");
    format!("{head}[listen]\naddress = \"127.0.0.1:{port}\"\n{tail}")
}

#[test]
fn an_imported_pool_passes_check_config_and_finds_every_key_nutcracker_wrote() {
    const KEYS: usize = 1_000;
    let backends: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let spare = Memcached::start();
    let (web, sessions, counters) = (free_port(), free_port(), free_port());
    // Three pools, like a real deployment: the one imported has named, weighted servers, a
    // hash tag, twemproxy settings memroute takes over, and a name memroute must change (any
    // YAML key is a twemproxy pool name); the others are left out.
    let yaml = format!(
        "web:\n  listen: 127.0.0.1:{web}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 400\n  servers:\n   - {spare}:1\n\
         \"sessions/eu\":\n  listen: 127.0.0.1:{sessions}\n  hash: fnv1a_64\n  hash_tag: \"{{}}\"\n  \
         distribution: ketama\n  auto_eject_hosts: false\n  timeout: 1000\n  \
         server_retry_timeout: 2000\n  server_failure_limit: 3\n  server_connections: 1\n  \
         preconnect: true\n  redis: false\n  servers:\n   - {a}:1 cache-a\n   - {b}:2 cache-b\n   \
         - {c}:3 cache-c\n\
         counters:\n  listen: 127.0.0.1:{counters}\n  hash: md5\n  servers:\n   - {spare}:1\n",
        spare = spare.addr(),
        a = backends[0].addr(),
        b = backends[1].addr(),
        c = backends[2].addr(),
    );
    let nutcracker = Nutcracker::start(&yaml);
    assert_eq!(nutcracker.port, web, "nutcracker started every pool");

    // Write through nutcracker's `sessions/eu` pool: plain keys (counter first, see
    // common::keys) and hash-tagged ones, where only the part inside {} is hashed.
    let keys: Vec<String> = common::keys("imp", KEYS - 200)
        .into_iter()
        .chain((0..200).map(|i| format!("sess:{{user{}}}:{i}", i % 40)))
        .collect();
    let mut nc = Client::connect(sessions);
    let items_of = |k: &str| (k.to_string(), format!("value-of-{k}"));
    let all: Vec<(String, String)> = keys.iter().map(|k| items_of(k)).collect();
    config_support::set_all(&mut nc, &all);
    let counts: Vec<usize> = backends.iter().map(items).collect();
    assert_eq!(counts.iter().sum::<usize>(), KEYS);
    assert!(
        counts.iter().all(|&n| n > 0),
        "every server got keys: {counts:?}"
    );
    assert_eq!(items(&spare), 0, "other pools untouched");

    // Import the pool, check it, run it.
    let dir = scratch_dir("import");
    let yaml_file = write(&dir, "nutcracker.yml", &yaml);
    let toml = import_ok(&yaml_file, Some("sessions/eu"));
    for expected in [
        "cache-a\"",
        ":2 cache-b\"",
        ":3 cache-c\"",
        "hash_tag = \"{}\"",
        "timeout = \"1s\"",
        "retry_timeout = \"2s\"",
        "failure_limit = 3",
        "connections = 1",
        "[pools.sessions_eu]",
        "tiers = [\"sessions_eu\"]",
        &format!("address = \"127.0.0.1:{sessions}\""),
    ] {
        assert!(toml.contains(expected), "{expected:?} in:\n{toml}");
    }
    assert!(
        toml.contains("web") && toml.contains("counters"),
        "the output says which pools were left out:\n{toml}"
    );
    assert!(
        toml.contains("preconnect"),
        "ignored settings are noted:\n{toml}"
    );
    let toml_file = write(&dir, "memroute.toml", &toml);
    check_config_ok(&toml_file);

    // nutcracker still holds the pool's port: memroute gets another one.
    let proxy = Memroute::start(&relisten(&toml, free_port()));
    let mut c = Client::connect(proxy.port);
    for batch in keys.chunks(100) {
        c.send(format!("get {}\r\n", batch.join(" ")).as_bytes());
        let mut expected = Vec::new();
        for k in batch {
            expected.extend(common::value_reply(
                k,
                0,
                format!("value-of-{k}").as_bytes(),
            ));
        }
        expected.extend_from_slice(b"END\r\n");
        c.expect(&expected);
    }
    // And writes through memroute land where nutcracker reads them.
    let fresh: Vec<(String, String)> = (0..100)
        .map(|i| (format!("{i}:fresh"), format!("f{i}")))
        .collect();
    config_support::set_all(&mut c, &fresh);
    for (k, v) in &fresh {
        assert_eq!(
            config_support::get(&mut nc, k).as_deref(),
            Some(v.as_bytes())
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs the import of `yaml` (with `--pool`), expecting exit 1; returns stderr.
fn refused(yaml: &str, pool: Option<&str>) -> String {
    let dir = scratch_dir("import-bad");
    let file = write(&dir, "nutcracker.yml", yaml);
    let out = import(&file, pool);
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no half config on stdout");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("nutcracker.yml"), "names the file: {err}");
    err
}

#[test]
fn what_memroute_cannot_take_over_is_refused_clearly() {
    let redis =
        "cache:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    let err = refused(redis, None);
    assert!(
        err.contains("pool `cache`") && err.contains("redis") && err.contains("not supported"),
        "{err}"
    );

    let typo = "cache:\n  listen: 127.0.0.1:22121\n  server_conections: 2\n  servers:\n   - 127.0.0.1:11211:1\n";
    let err = refused(typo, None);
    assert!(
        err.contains("`server_conections`") && err.contains("unknown"),
        "{err}"
    );

    // A Unix socket listener is taken over (see the three-pool test); a Unix socket server
    // is not: memroute connects to backends over TCP.
    let unix = "cache:\n  listen: /var/run/nutcracker.sock\n  servers:\n   - /tmp/mc.sock:1\n";
    assert!(refused(unix, None).contains("unix socket servers are not supported"));

    let two = "a:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:11211:1\n\
               b:\n  listen: 127.0.0.1:2\n  servers:\n   - 127.0.0.1:11212:1\n";
    let err = refused(two, Some("c"));
    assert!(err.contains("no pool named `c`"), "{err}");

    let err = refused("just: [a, list\n", None);
    assert!(err.contains("not a twemproxy config"), "{err}");
}

/// A blocking text-protocol connection over TCP or a Unix socket.
struct Raw {
    w: Box<dyn std::io::Write>,
    r: std::io::BufReader<Box<dyn std::io::Read>>,
}

impl Raw {
    fn tcp(address: &str) -> Raw {
        let s = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("{address}: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        Raw {
            r: std::io::BufReader::new(Box::new(s.try_clone().unwrap())),
            w: Box::new(s),
        }
    }

    fn unix(path: &Path) -> Raw {
        let s = std::os::unix::net::UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        Raw {
            r: std::io::BufReader::new(Box::new(s.try_clone().unwrap())),
            w: Box::new(s),
        }
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read a line");
        line
    }

    /// Sets every item, 100 per write, each answered `STORED`.
    fn set_all(&mut self, items: &[(String, String)]) {
        for chunk in items.chunks(100) {
            let mut req = String::new();
            for (k, v) in chunk {
                req.push_str(&format!("set {k} 0 0 {}\r\n{v}\r\n", v.len()));
            }
            self.w.write_all(req.as_bytes()).expect("write");
            for (k, _) in chunk {
                assert_eq!(self.line(), "STORED\r\n", "set {k}");
            }
        }
    }

    /// Gets every item, 100 keys per `get`, and asserts each value.
    fn expect_all(&mut self, items: &[(String, String)]) {
        for chunk in items.chunks(100) {
            let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
            self.w
                .write_all(format!("get {}\r\n", keys.join(" ")).as_bytes())
                .expect("write");
            for (k, v) in chunk {
                assert_eq!(
                    self.line(),
                    format!("VALUE {k} 0 {}\r\n", v.len()),
                    "get {k}"
                );
                assert_eq!(self.line(), format!("{v}\r\n"));
            }
            assert_eq!(self.line(), "END\r\n");
        }
    }
}

#[test]
fn a_whole_three_pool_file_with_a_unix_socket_serves_every_pool_on_its_address() {
    const KEYS: usize = 1_000;
    let web: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let sessions: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let local: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let (web_port, sessions_port) = (free_port(), free_port());
    let dir = scratch_dir("import-all");
    let sock = dir.join("nutcracker.sock");
    // Three pools with different rings: names and weights; md5 with a hash tag; and a Unix
    // socket pool with crc32a, as a sidecar next to an app would have.
    let yaml = format!(
        "web:\n  listen: 127.0.0.1:{web_port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         timeout: 1000\n  client_connections: 500\n  servers:\n   - {}:1 web-a\n   - {}:2 web-b\n   - {}:1 web-c\n\
         sessions:\n  listen: 127.0.0.1:{sessions_port}\n  hash: md5\n  hash_tag: \"{{}}\"\n  \
         distribution: ketama\n  timeout: 1000\n  servers:\n   - {}:1\n   - {}:1\n\
         local:\n  listen: {} 0660\n  hash: crc32a\n  distribution: ketama\n  timeout: 1000\n  \
         servers:\n   - {}:1\n   - {}:3\n",
        web[0].addr(),
        web[1].addr(),
        web[2].addr(),
        sessions[0].addr(),
        sessions[1].addr(),
        sock.display(),
        local[0].addr(),
        local[1].addr(),
    );
    let make_items = |tag: &str| -> Vec<(String, String)> {
        common::keys(tag, KEYS)
            .into_iter()
            .map(|k| {
                let v = format!("v-{k}");
                (k, v)
            })
            .collect()
    };
    let (web_items, session_items, local_items) =
        (make_items("web"), make_items("sess"), make_items("local"));
    let web_address = format!("127.0.0.1:{web_port}");
    let sessions_address = format!("127.0.0.1:{sessions_port}");
    {
        let _nutcracker = Nutcracker::start(&yaml);
        common::poll("nutcracker's Unix socket", || {
            std::os::unix::net::UnixStream::connect(&sock).ok()
        });
        Raw::tcp(&web_address).set_all(&web_items);
        Raw::tcp(&sessions_address).set_all(&session_items);
        Raw::unix(&sock).set_all(&local_items);
    }
    for (pool, backends) in [("web", &web), ("sessions", &sessions), ("local", &local)] {
        let counts: Vec<usize> = backends.iter().map(items).collect();
        assert_eq!(counts.iter().sum::<usize>(), KEYS, "{pool}: {counts:?}");
        assert!(
            counts.iter().all(|&n| n > 0),
            "{pool}: every server got keys: {counts:?}"
        );
    }

    let yaml_file = write(&dir, "nutcracker.yml", &yaml);
    let toml = import_ok(&yaml_file, None);
    for expected in [
        format!("address = \"{web_address}\""),
        format!("address = \"{sessions_address}\""),
        format!("address = \"unix:{}\"", sock.display()),
        "mode = 0o660".to_string(),
        "pool = \"sessions\"".to_string(),
        "pool = \"local\"".to_string(),
        "max_connections = 500".to_string(),
        "tiers = [\"web\"]".to_string(),
    ] {
        assert!(toml.contains(&expected), "{expected:?} in:\n{toml}");
    }
    let toml_file = write(&dir, "memroute.toml", &toml);
    check_config_ok(&toml_file);

    // nutcracker is gone (its socket file stays behind, as after a crash): memroute takes
    // the same addresses, and every key is found where nutcracker put it.
    let proxy = Memroute::start(&toml);
    assert_eq!(
        proxy.port, web_port,
        "memroute listens where nutcracker did"
    );
    Raw::tcp(&web_address).expect_all(&web_items);
    Raw::tcp(&sessions_address).expect_all(&session_items);
    Raw::unix(&sock).expect_all(&local_items);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);
    drop(proxy);
    let _ = std::fs::remove_dir_all(dir);
}
