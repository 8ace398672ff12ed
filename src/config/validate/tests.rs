use std::time::Duration;

use crate::config::{Config, LowerOnWrite, ServerConfig};
use crate::ring::{Distribution, HashFn};

fn ok(text: &str) -> Config {
    Config::parse(text, "t.toml").unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// `(line, column, message)` of every error.
fn errors(text: &str) -> Vec<(usize, usize, String)> {
    let e = Config::parse(text, "t.toml").expect_err("config should be rejected");
    e.0.into_iter()
        .map(|e| (e.line, e.column, e.message))
        .collect()
}

/// The single error of `text`, which must contain `needle`, and its line.
fn one_error(text: &str, needle: &str) -> usize {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    assert!(
        e[0].2.contains(needle),
        "{:?} does not contain {needle:?}",
        e[0].2
    );
    e[0].0
}

const POOL: &str = "[pools.a]\nservers = [\"127.0.0.1:11211\"]\n";

#[test]
fn one_pool_without_routes_gets_the_default_route_and_defaults() {
    let c = ok(POOL);
    assert_eq!(c.listen.address, "127.0.0.1:11311");
    assert_eq!(c.listen.max_connections, 16384);
    assert!(!c.listen.allow_flush_all);
    assert_eq!(c.admin, None);
    let a = &c.pools["a"];
    assert_eq!(a.hash, HashFn::Fnv1a64);
    assert_eq!(a.distribution, Distribution::Ketama);
    assert_eq!(
        (a.timeout, a.connections, a.failure_limit),
        (Duration::from_secs(1), 2, 3)
    );
    assert_eq!(
        (a.retry_timeout, a.eject, a.hash_tag),
        (Duration::from_secs(10), false, None)
    );
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(
        (r.prefix.as_str(), r.tiers.as_slice()),
        ("", &["a".to_string()][..])
    );
    assert!(r.warm);
    assert_eq!((r.warm_ttl, r.lower_on_write), (None, LowerOnWrite::Delete));
}

#[test]
fn design_example_parses_with_every_key() {
    let c = ok(r#"
[listen]
address = "127.0.0.1:11311"
max_connections = 100
allow_flush_all = true
max_value_size = 2048
max_line_size = 4096
max_inflight = 16
max_client_output = 65536

[admin]
address = "127.0.0.1:9100"

[pools.new]
servers = ["10.0.1.1:11211", "10.0.1.2:11211:2 cache-b"]
hash = "md5"
distribution = "modula"
hash_tag = "{}"
timeout = "250ms"
connections = 4
failure_limit = 5
retry_timeout = "1m 30s"
eject = true

[pools.old]
servers = ["10.0.0.1:11211", "10.0.0.2:11211"]

[[routes]]
prefix = ""
tiers = ["new", "old"]
warm = false
warm_ttl = "1h"
lower_on_write = "set"

[[routes]]
prefix = "session:"
tiers = ["old"]
"#);
    assert_eq!(c.listen.max_inflight, 16);
    assert_eq!(c.listen.max_client_output, 65536);
    assert!(c.listen.allow_flush_all);
    assert_eq!(c.admin.unwrap().address, "127.0.0.1:9100");
    let new = &c.pools["new"];
    assert_eq!(
        (new.hash, new.distribution),
        (HashFn::Md5, Distribution::Modula)
    );
    assert_eq!(new.hash_tag, Some(*b"{}"));
    assert_eq!(
        (new.timeout, new.retry_timeout),
        (Duration::from_millis(250), Duration::from_secs(90))
    );
    assert_eq!(
        (new.connections, new.failure_limit, new.eject),
        (4, 5, true)
    );
    assert_eq!(c.routes[0].warm_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(
        (c.routes[0].warm, c.routes[0].lower_on_write),
        (false, LowerOnWrite::Set)
    );
    assert_eq!(c.routes[1].prefix, "session:");
}

#[test]
fn server_forms_follow_twemproxys_ring_name_rule() {
    let c = ok(r#"[pools.a]
servers = [
  "10.0.0.1:11211",
  "10.0.0.2:11212",
  "10.0.0.3:11211:3",
  "cache.local:11211:2 cache-b",
  { address = "[::1]:11213" },
  { address = "10.0.0.4:11211", weight = 7, name = "seven" },
]"#);
    let s = |address: &str, weight, name: &str, named| ServerConfig {
        address: address.into(),
        weight,
        name: name.into(),
        named,
    };
    assert_eq!(
        c.pools["a"].servers,
        [
            s("10.0.0.1:11211", 1, "10.0.0.1", false),
            s("10.0.0.2:11212", 1, "10.0.0.2:11212", false),
            s("10.0.0.3:11211", 3, "10.0.0.3", false),
            s("cache.local:11211", 2, "cache-b", true),
            s("[::1]:11213", 1, "[::1]:11213", false),
            s("10.0.0.4:11211", 7, "seven", true),
        ]
    );
}

#[test]
fn five_mistakes_give_five_located_messages() {
    let text = r#"[listen]
adress = "127.0.0.1:11311"
max_connections = "lots"

[pools.a]
servers = ["127.0.0.1:11211:0", "127.0.0.1:11212"]
timeout = "1 parsec"

[[routes]]
prefix = ""
tiers = ["a", "b"]
"#;
    let e = errors(text);
    let lines: Vec<(usize, usize)> = e.iter().map(|(l, c, _)| (*l, *c)).collect();
    assert_eq!(
        lines,
        [(2, 1), (3, 19), (6, 12), (7, 11), (11, 15)],
        "{e:#?}"
    );
    assert!(e[0].2.contains("did you mean `address`?"));
    assert!(e[1].2.contains("must be an integer, found a string"));
    assert!(e[2].2.contains("weight must be a number from 1"));
    assert!(e[3].2.contains("bad duration"));
    assert!(e[4].2.contains("no pool named `b`"));
    // The Display form is one `file:line:col: message` per line.
    let shown = Config::parse(text, "t.toml").unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 5);
    assert!(shown.starts_with("t.toml:2:1: unknown key `adress` in [listen]"));
}

#[test]
fn syntax_error_is_one_located_error() {
    let e = errors("[pools.a]\nservers = [\"127.0.0.1:11211\"\ntimeout = \"1s\"\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].0 >= 2 && e[0].2.starts_with("TOML syntax error"),
        "{e:#?}"
    );
}

#[test]
fn unknown_keys_get_hints_including_twemproxy_names() {
    let text = format!("{POOL}auto_eject_hosts = true\ntimout = \"1s\"\ncolour = 1\n");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].2.ends_with("did you mean `eject`?"));
    assert!(e[1].2.ends_with("did you mean `timeout`?"));
    assert!(e[2].2.contains("expected one of: servers, hash"));
    assert_eq!(
        one_error(&format!("{POOL}[pool.b]\n"), "did you mean `pools`?"),
        3
    );
    let single = format!("{POOL}[routes]\ntiers = [\"a\"]\n");
    assert_eq!(one_error(&single, "[[routes]] (double brackets)"), 3);
    let listen = format!("{POOL}listen = \"127.0.0.1:22121\"\n");
    assert_eq!(one_error(&listen, "did you mean `[listen] address`?"), 3);
    let tier = "[pools.main]\nservers = [\"h:1\"]\n[[routes]]\ntiers = [\"mian\"]\n";
    assert_eq!(
        one_error(tier, "no pool named `mian`; did you mean `main`?"),
        4
    );
}

#[test]
fn duplicate_ring_names_and_addresses_are_rejected() {
    let names = "[pools.a]\nservers = [\n\"10.0.0.1:11211\",\n\"10.0.0.2:11211:1 10.0.0.1\"]\n";
    assert_eq!(
        one_error(
            names,
            "duplicate server name `10.0.0.1` in pool `a` (also at line 3)"
        ),
        4
    );
    let addresses = "[pools.a]\nservers = [\"h:1:1 x\", \"h:1:1 y\"]\n";
    assert_eq!(one_error(addresses, "server `h:1` is listed twice"), 2);
    // Unnamed, the address is also the ring name: the message is about the address.
    let unnamed = "[pools.a]\nservers = [\"h:1\", \"h:1:2\"]\n";
    assert_eq!(one_error(unnamed, "server `h:1` is listed twice"), 2);
}

#[test]
fn bad_servers_and_addresses_are_rejected() {
    for (server, needle) in [
        ("\"127.0.0.1\"", "expected host:port"),
        ("\"127.0.0.1:http\"", "port \"http\" is not a number"),
        ("\"127.0.0.1:0\"", "port \"0\" is not a number from 1"),
        ("\"::1:11211\"", "IPv6 host in brackets"),
        ("\"h:1:x\"", "weight must be a number"),
        ("\"h:1:1 a b\"", "without spaces"),
        (
            "{ address = \"h:1\", weight = 0 }",
            "`weight` must be at least 1, found 0",
        ),
        ("{ weight = 2 }", "needs `address"),
        ("{ address = \"h:1\", port = 2 }", "unknown key `port`"),
        ("7", "a server is \"host:port"),
    ] {
        let text = format!("[pools.a]\nservers = [{server}]\n");
        assert_eq!(one_error(&text, needle), 2, "{server}");
    }
    let listen = format!("[listen]\naddress = \"localhost\"\n{POOL}");
    assert_eq!(one_error(&listen, "`address`: bad address"), 2);
    // Port 0 (any free port) is fine for a listener.
    assert_eq!(
        ok(&format!("[listen]\naddress = \"127.0.0.1:0\"\n{POOL}"))
            .listen
            .address,
        "127.0.0.1:0"
    );
}

#[test]
fn pool_settings_are_checked() {
    for (line, needle) in [
        ("servers = []", "pool `a` has no servers"),
        (
            "servers = \"h:1\"",
            "`servers` must be an array, found a string",
        ),
        ("hash_tag = \"{\"", "exactly two ASCII characters"),
        // after the key, the messages are ring::{HashFn, Distribution}'s own
        ("hash = \"sha1\"", "`hash`: "),
        ("distribution = \"round_robin\"", "`distribution`: "),
        (
            "connections = 0",
            "`connections` must be at least 1, found 0",
        ),
        ("failure_limit = -1", "`failure_limit` must be at least 1"),
        ("timeout = \"0s\"", "`timeout` must be more than 0"),
        ("retry_timeout = 10", "`retry_timeout` must be a string"),
        ("eject = \"yes\"", "`eject` must be a boolean"),
    ] {
        let text = format!("[pools.a]\n{line}\n");
        let text = if line.starts_with("servers") {
            text
        } else {
            format!("{POOL}{line}\n")
        };
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{line}: {e:#?}");
        assert!(e[0].2.contains(needle), "{line}: {:?}", e[0].2);
    }
    assert_eq!(
        one_error("[pools.a]\nhash = \"md5\"\n", "pool `a` has no `servers`"),
        1
    );
    assert_eq!(one_error("[listen]\n", "no pools"), 0);
}

#[test]
fn routes_are_checked() {
    let two = "[pools.a]\nservers = [\"h:1\"]\n[pools.b]\nservers = [\"h:2\"]\n";
    assert_eq!(one_error(two, "no [[routes]] and several pools (a, b)"), 0);
    for (route, needle) in [
        ("prefix = \"\"", "route has no tiers"),
        ("tiers = []", "route has no tiers"),
        ("tiers = [\"c\"]", "no pool named `c` (pools: a, b)"),
        ("tiers = [\"a\", \"a\"]", "pool `a` is twice in `tiers`"),
        (
            "tiers = [\"a\"]\nlower_on_write = \"drop\"",
            "must be \"delete\", \"ignore\" or \"set\"",
        ),
        (
            "tiers = [\"a\"]\nwarm_ttl = \"500ms\"",
            "whole number of seconds",
        ),
        ("tiers = [\"a\"]\nwarm_ttl = \"soon\"", "bad duration"),
        (
            "tiers = [\"a\"]\n[[routes]]\nprefix = \"a b\"\ntiers = [\"b\"]",
            "can never match",
        ),
    ] {
        let text = format!("{two}[[routes]]\n{route}\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{route}: {e:#?}");
        assert!(e[0].2.contains(needle), "{route}: {:?}", e[0].2);
    }
    let no_default = format!("{two}[[routes]]\nprefix = \"x:\"\ntiers = [\"a\"]\n");
    assert_eq!(one_error(&no_default, "no default route"), 5);
    let dup =
        format!("{two}[[routes]]\ntiers = [\"a\"]\n[[routes]]\nprefix = \"\"\ntiers = [\"b\"]\n");
    assert_eq!(
        one_error(&dup, "duplicate route prefix \"\" (also at line 5)"),
        8
    );
}

#[test]
fn admin_is_optional_and_must_differ_from_listen() {
    assert_eq!(
        ok(&format!("[admin]\n{POOL}")).admin.unwrap().address,
        "127.0.0.1:9100"
    );
    let same = format!("[admin]\naddress = \"127.0.0.1:11311\"\n{POOL}");
    assert_eq!(one_error(&same, "same as [listen] address"), 1);
}

#[test]
fn example_config_is_valid_and_documents_every_key() {
    let text = include_str!("../../../config.example.toml");
    let c = ok(text);
    assert_eq!(c.pools.len(), 6);
    assert_eq!(c.routes.len(), 3);
    let keys = [
        super::TOP_KEYS,
        super::LISTEN_KEYS,
        super::pools::POOL_KEYS,
        super::routes::ROUTE_KEYS,
    ];
    for key in keys.concat() {
        let written = text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{key} ="))
                || l.starts_with(&format!("[{key}"))
                || l.starts_with(&format!("[[{key}"))
        });
        assert!(written, "config.example.toml does not show `{key}`");
    }
    for key in super::pools::SERVER_KEYS {
        assert!(
            text.contains(&format!("{key} =")),
            "config.example.toml does not show server `{key}`"
        );
    }
}

#[test]
fn max_client_output_is_checked_with_its_position() {
    let at = |line: &str| errors(&format!("[listen]\n{line}\n{POOL}"));
    let e = at("max_client_output = 100");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].0, e[0].1), (2, 21), "{e:#?}");
    assert!(
        e[0].2
            .contains("`max_client_output` must be at least 4096, found 100"),
        "{e:#?}"
    );
    let e = at("max_client_output = \"4MiB\"");
    assert!(
        e[0].2.contains("must be an integer, found a string"),
        "{e:#?}"
    );
    assert_eq!(ok(POOL).listen.max_client_output, 4 * 1024 * 1024);
}
