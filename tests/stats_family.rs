//! memcached's `stats` family and `cache_memlimit` through memroute, with memcached's own
//! bytes where they are deterministic. `MEMROUTE_TEST_TARGET=direct` runs the tests that do
//! not test memroute-only behaviour against memcached 1.6.18 itself, which proves the bytes.
//!
//! `memcached_exporter_scrape_has_no_error` does what prometheus/memcached_exporter does on
//! every scrape: its client (grobie/gomemcache) sends `stats`, `stats slabs`, `stats items` on
//! one connection and `stats settings` on another, parses them with the rules below, and the
//! exporter marks the target down (`memcached_up 0`) on any error.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Client, Memcached, Memroute, Target};

/// One `stats …` answer, read line by line until `END`; `Err` with the line gomemcache would
/// fail on (a `CLIENT_ERROR` first line; any line that is neither `STAT …` nor `END`, on which
/// gomemcache would wait for `END` until its timeout).
fn stats_lines(c: &mut Client, command: &str) -> Result<Vec<String>, String> {
    c.send(format!("{command}\r\n").as_bytes());
    let mut lines = Vec::new();
    loop {
        let line = String::from_utf8(c.read_line()).map_err(|e| e.to_string())?;
        if line == "END\r\n" {
            return Ok(lines);
        }
        if !line.starts_with("STAT") {
            return Err(format!("{command}: {line:?}"));
        }
        lines.push(line);
    }
}

/// gomemcache's `statsFromAddr`: general, per-slab and per-item maps.
#[derive(Default, Debug)]
struct Stats {
    general: HashMap<String, String>,
    slabs: HashMap<i64, HashMap<String, String>>,
    items: HashMap<i64, HashMap<String, String>>,
}

fn scrape_stats(c: &mut Client) -> Result<Stats, String> {
    let mut stats = Stats::default();
    for command in ["stats", "stats slabs", "stats items"] {
        for line in stats_lines(c, command)? {
            // gomemcache splits on single spaces and keeps lines of exactly three fields.
            let s: Vec<&str> = line.split(' ').collect();
            if s.len() != 3 || !s[0].starts_with("STAT") {
                continue;
            }
            let value = s[2].trim().to_string();
            // `name`, `slab:name` or `items:slab:name`.
            let f: Vec<&str> = s[1].split(':').collect();
            let (table, id, name) = match f[..] {
                [name] => {
                    stats.general.insert(name.to_string(), value);
                    continue;
                }
                [id, name] => (&mut stats.slabs, id, name),
                [_, id, name] => (&mut stats.items, id, name),
                _ => continue,
            };
            let id: i64 = id.parse().map_err(|e| format!("{line:?}: {e}"))?;
            table.entry(id).or_default().insert(name.to_string(), value);
        }
    }
    Ok(stats)
}

/// gomemcache's `statsSettingsFromAddr`: every line has three or four fields.
fn scrape_settings(c: &mut Client) -> Result<HashMap<String, String>, String> {
    let mut settings = HashMap::new();
    for line in stats_lines(c, "stats settings")? {
        let s: Vec<&str> = line.split(' ').collect();
        match s.len() {
            3 | 4 => {
                settings.insert(s[1].to_string(), s[2].trim().to_string());
            }
            _ => return Err(format!("unexpected stats line format {line:?}")),
        }
    }
    Ok(settings)
}

/// The exporter's `parse`: absent is fine, present must be a float.
fn number(map: &HashMap<String, String>, key: &str) -> Result<(), String> {
    match map.get(key) {
        None => Ok(()),
        Some(v) => v
            .parse::<f64>()
            .map(|_| ())
            .map_err(|e| format!("{key}={v:?}: {e}")),
    }
}

/// The exporter's `sum`: every key must be present and a float.
fn required(map: &HashMap<String, String>, key: &str) -> Result<(), String> {
    if !map.contains_key(key) {
        return Err(format!("{key}: key not found"));
    }
    number(map, key)
}

/// The exporter's `parseTimeval`: `seconds.micros`.
fn timeval(map: &HashMap<String, String>, key: &str) -> Result<(), String> {
    let Some(v) = map.get(key) else {
        return Ok(());
    };
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.parse::<f64>().is_err()) {
        return Err(format!("{key}={v:?}: not a timeval"));
    }
    Ok(())
}

fn yes_no(map: &HashMap<String, String>, key: &str) -> Result<(), String> {
    match map.get(key).map(String::as_str) {
        None | Some("yes") | Some("no") => Ok(()),
        Some(v) => Err(format!("{key}={v:?}: not a bool")),
    }
}

/// A rule of the exporter's for one value: Ok, or what the exporter fails on.
type Rule = fn(&HashMap<String, String>, &str) -> Result<(), String>;

/// `rule` for each of `keys` in `map`.
fn each(map: &HashMap<String, String>, rule: Rule, keys: &[&str]) -> Result<(), String> {
    keys.iter().try_for_each(|key| rule(map, key))
}

/// memcached_exporter's `parseStats` and `parseStatsSettings` (slab metrics enabled).
fn exporter_rules(stats: &Stats, settings: &HashMap<String, String>) -> Result<(), String> {
    const OPS: [&str; 6] = ["get", "delete", "incr", "decr", "cas", "touch"];
    let s = &stats.general;
    for op in OPS {
        number(s, &format!("{op}_hits"))?;
        number(s, &format!("{op}_misses"))?;
    }
    each(s, number, &["uptime", "time", "cas_badval", "cmd_flush"])?;
    // "memcached includes cas operations again in cmd_set": cmd_set and the three cas
    // counters must all be there, or the scrape fails.
    each(
        s,
        required,
        &["cmd_set", "cas_misses", "cas_hits", "cas_badval"],
    )?;
    each(s, timeval, &["rusage_user", "rusage_system"])?;
    each(
        s,
        number,
        &[
            "bytes",
            "limit_maxbytes",
            "curr_items",
            "total_items",
            "bytes_read",
            "bytes_written",
            "curr_connections",
            "total_connections",
            "rejected_connections",
            "conn_yields",
            "listen_disabled_num",
            "evictions",
            "reclaimed",
            "store_too_large",
            "store_no_memory",
            "lru_crawler_starts",
            "direct_reclaims",
            "crawler_items_checked",
            "crawler_reclaimed",
            "moves_to_cold",
            "moves_to_warm",
            "moves_within_lru",
            "total_malloced",
            "accepting_conns",
        ],
    )?;
    for item in stats.items.values() {
        for key in item.keys() {
            number(item, key)?;
        }
    }
    for slab in stats.slabs.values() {
        for op in OPS {
            number(slab, &format!("{op}_hits"))?;
        }
        each(slab, required, &["cmd_set", "cas_hits", "cas_badval"])?;
        each(
            slab,
            number,
            &[
                "chunk_size",
                "chunks_per_page",
                "total_pages",
                "total_chunks",
                "used_chunks",
                "free_chunks",
                "free_chunks_end",
                "mem_requested",
            ],
        )?;
    }
    number(settings, "maxconns")?;
    if settings.get("lru_crawler").map(String::as_str) == Some("yes") {
        each(settings, yes_no, &["lru_crawler", "lru_maintainer_thread"])?;
        each(
            settings,
            number,
            &[
                "lru_crawler_sleep",
                "lru_crawler_tocrawl",
                "hot_lru_pct",
                "warm_lru_pct",
                "hot_max_factor",
                "warm_max_factor",
            ],
        )?;
    }
    Ok(())
}

fn general(c: &mut Client) -> HashMap<String, String> {
    stats_lines(c, "stats")
        .expect("stats")
        .iter()
        .filter_map(|l| {
            let mut f = l.trim_end().splitn(3, ' ').skip(1);
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn memcached_exporter_scrape_has_no_error() {
    let t = Target::new(2);
    let mut c = t.client();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    let stats = scrape_stats(&mut c).expect("stats, stats slabs, stats items");
    let settings = scrape_settings(&mut t.client()).expect("stats settings");
    exporter_rules(&stats, &settings).expect("the exporter parses every value");
    // What the exporter graphs is there and means what memcached means.
    assert_eq!(stats.general["cmd_set"], "1");
    let curr: u64 = stats.general["curr_connections"].parse().expect("a count");
    assert!(curr >= 1, "this connection is open: {curr}");
    assert!(settings.contains_key("maxconns"), "{settings:?}");
    // A scrape again on the same connection: the answers left nothing behind.
    scrape_stats(&mut c).expect("second scrape");
    c.roundtrip(b"version\r\n", &c_version(&t));
}

fn c_version(t: &Target) -> Vec<u8> {
    if t.is_direct() {
        b"VERSION 1.6.18\r\n".to_vec()
    } else {
        format!("VERSION {}\r\n", env!("CARGO_PKG_VERSION")).into_bytes()
    }
}

/// Bytes memcached 1.6.18 sends on a fresh server, and memroute sends too.
#[test]
fn stats_subcommands_answer_memcached_bytes() {
    let t = Target::new(1);
    let mut c = t.client();
    c.roundtrips(rows![
        b"stats items\r\n" => b"END\r\n",
        b"stats sizes\r\n" => b"STAT sizes_status disabled\r\nEND\r\n",
        b"stats cachedump 1 1\r\n" => b"END\r\n",
        b"stats cachedump 63 0 extra\r\n" => b"END\r\n",
        b"stats cachedump\r\n" => b"CLIENT_ERROR bad command line\r\n",
        b"stats cachedump 1\r\n" => b"CLIENT_ERROR bad command line\r\n",
        b"stats cachedump x 1\r\n" => b"CLIENT_ERROR bad command line format\r\n",
        b"stats cachedump -1 0\r\n" => b"CLIENT_ERROR bad command line format\r\n",
        b"stats cachedump 64 0\r\n" => b"CLIENT_ERROR Illegal slab id\r\n",
        b"stats detail dump\r\n" => b"END\r\n",
        b"stats detail off\r\n" => b"OK\r\n",
        b"stats detail\r\n" => b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        b"stats detail sideways\r\n" => b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
        b"stats reset\r\n" => b"RESET\r\n",
        b"stats reset now\r\n" => b"RESET\r\n",
        b"stats nonsense\r\n" => b"ERROR\r\n",
        b"cache_memlimit\r\n" => b"ERROR\r\n",
        b"cache_memlimit abc\r\n" => b"ERROR\r\n",
        b"cache_memlimit -1\r\n" => b"ERROR\r\n",
        b"cache_memlimit 1 2 3\r\n" => b"ERROR\r\n",
    ]);
    // A bad limit with noreply is silent, as in memcached.
    c.send(b"cache_memlimit abc noreply\r\n");
    c.roundtrip(b"version\r\n", &c_version(&t));
}

/// The proxy has no slab classes (it stores nothing): an empty list, where a fresh memcached
/// lists `active_slabs 0` and `total_malloced 0` (memory the proxy does not have).
#[test]
fn stats_slabs_of_a_proxy_is_an_empty_list() {
    let Some((_t, mut c)) = Target::memroute_only("memcached lists its own slab memory", 1) else {
        return;
    };
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    c.roundtrip(b"stats slabs\r\n", b"END\r\n");
    c.roundtrip(b"stats items\r\n", b"END\r\n");
    c.roundtrip(
        b"stats detail on\r\n",
        b"SERVER_ERROR stats detail is not collected by memroute\r\n",
    );
}

#[test]
fn stats_reset_zeroes_memcached_counters() {
    let t = Target::new(2);
    let mut c = t.client();
    c.roundtrip(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n");
    let cas = c.gets_cas("k");
    c.roundtrip(
        format!("cas k 0 0 1 {}\r\nw\r\n", cas + 1000).as_bytes(),
        b"EXISTS\r\n",
    );
    c.roundtrip(
        format!("cas k 0 0 1 {cas}\r\nw\r\n").as_bytes(),
        b"STORED\r\n",
    );
    c.roundtrip(b"cas nokey 0 0 1 1\r\nw\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"incr nokey 1\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"set n 0 0 1\r\n5\r\n", b"STORED\r\n");
    c.roundtrip(b"incr n 2\r\n", b"7\r\n");
    c.roundtrip(b"decr n 1\r\n", b"6\r\n");
    c.roundtrip(b"touch n 0\r\n", b"TOUCHED\r\n");
    c.roundtrip(b"touch nokey 0\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"delete k\r\n", b"DELETED\r\n");
    c.roundtrip(b"delete k\r\n", b"NOT_FOUND\r\n");
    c.roundtrip(b"get n k\r\n", b"VALUE n 0 1\r\n6\r\nEND\r\n");
    let s = general(&mut c);
    for (name, want) in [
        ("cmd_set", "5"),
        ("cas_badval", "1"),
        ("cas_hits", "1"),
        ("cas_misses", "1"),
        ("incr_misses", "1"),
        ("incr_hits", "1"),
        ("decr_hits", "1"),
        ("decr_misses", "0"),
        ("touch_hits", "1"),
        ("touch_misses", "1"),
        ("delete_hits", "1"),
        ("delete_misses", "1"),
        ("get_hits", "2"),
        ("get_misses", "1"),
    ] {
        assert_eq!(s.get(name).map(String::as_str), Some(want), "{name}: {s:?}");
    }
    c.roundtrip(b"stats reset\r\n", b"RESET\r\n");
    let s = general(&mut c);
    for name in [
        "cmd_set",
        "cmd_get",
        "cas_badval",
        "cas_hits",
        "incr_misses",
        "delete_hits",
        "get_hits",
        "get_misses",
    ] {
        assert_eq!(s.get(name).map(String::as_str), Some("0"), "{name}: {s:?}");
    }
    // Counting goes on from zero.
    c.roundtrip(b"delete n\r\n", b"DELETED\r\n");
    assert_eq!(general(&mut c)["delete_hits"], "1");
}

/// A raw connection that has been answered once, and its `tcp:ip:port` as the server sees it.
fn raw_client(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"version\r\n").expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("read version");
    assert!(buf[..n].starts_with(b"VERSION "), "{:?}", &buf[..n]);
    let me = format!("tcp:{}", s.local_addr().expect("local addr"));
    (s, me)
}

#[test]
fn stats_conns_lists_the_listener_and_this_connection() {
    let t = Target::new(1);
    let mut c = t.client();
    let (_held, me) = raw_client(t.port());
    let lines = stats_lines(&mut c, "stats conns").expect("stats conns");
    let listen = format!("tcp:127.0.0.1:{}", t.port());
    // The fd of the entry whose addr is `addr`.
    let fd_of = |lines: &[String], addr: &str| {
        lines.iter().find_map(|l| {
            let rest = l.strip_prefix("STAT ")?.trim_end();
            let (key, value) = rest.split_once(' ')?;
            let (fd, field) = key.split_once(':')?;
            (field == "addr" && value == addr).then(|| fd.to_string())
        })
    };
    let listener = fd_of(&lines, &listen).unwrap_or_else(|| panic!("no listener in {lines:?}"));
    assert!(
        lines.contains(&format!("STAT {listener}:state conn_listening\r\n")),
        "{lines:?}"
    );
    let mine = fd_of(&lines, &me).unwrap_or_else(|| panic!("no {me} in {lines:?}"));
    assert!(
        lines.contains(&format!("STAT {mine}:listen_addr {listen}\r\n")),
        "{lines:?}"
    );
    // A closed client leaves the list.
    let (other, theirs) = raw_client(t.port());
    drop(other);
    common::poll("closed client leaves stats conns", || {
        let lines = stats_lines(&mut c, "stats conns").expect("stats conns");
        fd_of(&lines, &theirs).is_none().then_some(())
    });
}

#[test]
fn stats_settings_reports_the_running_config() {
    if common::skip_unless_memroute("memcached reports its own settings") {
        return;
    }
    let backend = Memcached::start();
    let proxy = Memroute::builder()
        .listen("max_connections = 77\nmax_value_size = 4096\nallow_flush_all = true")
        .pool("main", [&backend])
        .start();
    let mut c = Client::connect(proxy.port);
    let threads = thread::available_parallelism().map_or(1, |n| n.get());
    let want = format!(
        "STAT maxconns 77\r\nSTAT tcpport {}\r\nSTAT udpport 0\r\nSTAT inter 127.0.0.1\r\n\
         STAT domain_socket NULL\r\nSTAT num_threads {threads}\r\nSTAT detail_enabled no\r\n\
         STAT cas_enabled yes\r\nSTAT tcp_backlog 1024\r\nSTAT binding_protocol ascii\r\n\
         STAT item_size_max 4096\r\nSTAT flush_enabled yes\r\nSTAT max_line_size 65536\r\n\
         STAT max_inflight 1024\r\nEND\r\n",
        proxy.port
    );
    c.roundtrip(b"stats settings\r\n", want.as_bytes());
    let s = general(&mut c);
    assert_eq!(s["max_connections"], "77");
    assert_eq!(s["accepting_conns"], "1");
}

#[test]
fn cache_memlimit_is_refused_unless_flush_all_is_allowed() {
    let Some((t, mut c)) = Target::memroute_only("memcached always accepts cache_memlimit", 2)
    else {
        return;
    };
    c.roundtrip(
        b"cache_memlimit 100\r\n",
        b"SERVER_ERROR cache_memlimit disabled\r\n",
    );
    c.send(b"cache_memlimit 100 noreply\r\n");
    c.roundtrip(b"version\r\n", &c_version(&t));
    for b in &t.backends {
        assert_eq!(backend_maxbytes(b), "67108864", "backend unchanged");
    }
}

#[test]
fn cache_memlimit_reaches_every_backend_when_allowed() {
    let t = Target::with_options(3, "allow_flush_all = true", "");
    let mut c = t.client();
    c.roundtrip(b"cache_memlimit 100\r\n", b"OK\r\n");
    for b in &t.backends {
        assert_eq!(backend_maxbytes(b), "104857600");
    }
    c.send(b"cache_memlimit 80 noreply\r\n");
    c.roundtrip(b"version\r\n", &c_version(&t));
    for b in &t.backends {
        assert_eq!(backend_maxbytes(b), "83886080");
    }
    // memcached's own refusal comes back as memcached words it.
    c.roundtrip(
        b"cache_memlimit 7\r\n",
        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
    );
}

/// `maxbytes` from a backend's `stats settings`, asked directly.
fn backend_maxbytes(b: &Memcached) -> String {
    // The proxy answers a noreply request without waiting for the backends.
    thread::sleep(Duration::from_millis(50));
    let mut c = Client::connect(b.port);
    let settings = scrape_settings(&mut c).expect("backend settings");
    settings["maxbytes"].clone()
}
