use std::time::Duration;

use super::*;
use crate::config::{LowerOnWrite, expect};

/// twemproxy's sample `alpha` pool, with named servers added.
const ALPHA: &str = r#"
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  redis: false
  timeout: 400
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:11211:1
   - 127.0.0.1:11212:2 server2
"#;

fn parse(toml: &str) -> Config {
    Config::parse(toml, "imported").unwrap_or_else(|e| panic!("{e}\n---\n{toml}"))
}

fn invalid(yaml: &str) -> Vec<String> {
    match import(yaml, None) {
        Err(ImportError::Invalid(errors)) => errors,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn imports_a_pool_that_parses_with_the_same_settings() {
    let toml = import(ALPHA, None).unwrap();
    assert_eq!(
        toml,
        r#"# Imported from twemproxy pool `alpha` by `memroute import-nutcracker`.
# Servers keep twemproxy's "host:port:weight [name]" form: same ring, same key placement.

[listen]
address = "127.0.0.1:22121"

# Prometheus metrics (twemproxy's stats port was a command-line flag):
# [admin]
# address = "127.0.0.1:9100"

[pools.alpha]
servers = [
  "127.0.0.1:11211:1",
  "127.0.0.1:11212:2 server2",
]
hash = "fnv1a_64"                  # hash
distribution = "ketama"            # distribution
eject = true                       # auto_eject_hosts
timeout = "400ms"                  # timeout, in ms
retry_timeout = "2s"               # server_retry_timeout, in ms
failure_limit = 1                  # server_failure_limit
connections = 1                    # twemproxy's default server_connections

[[routes]]
prefix = ""
tiers = ["alpha"]
"#
    );
    let c = parse(&toml);
    assert_eq!(c.listen.address, "127.0.0.1:22121");
    let pool = &c.pools["alpha"];
    let names: Vec<(&str, u32)> = pool
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.weight))
        .collect();
    // twemproxy's ring names: host alone for port 11211, the configured name otherwise.
    assert_eq!(names, [("127.0.0.1", 1), ("server2", 2)]);
    assert_eq!(
        (pool.timeout, pool.retry_timeout),
        (Duration::from_millis(400), Duration::from_secs(2))
    );
    assert_eq!(
        (pool.failure_limit, pool.connections, pool.eject),
        (1, 1, true)
    );
    assert_eq!(c.routes.len(), 1);
    assert_eq!(
        (c.routes[0].tiers.as_slice(), c.routes[0].lower_on_write),
        (&["alpha".to_string()][..], LowerOnWrite::Delete)
    );
}

#[test]
fn missing_settings_get_twemproxys_defaults_and_ignored_ones_a_comment() {
    let yaml = "p:\n  listen: 0.0.0.0:22121\n  preconnect: true\n  backlog: 1024\n  client_connections: 100\n  servers:\n    - 127.0.0.1:11211:1\n";
    let toml = import(yaml, None).unwrap();
    for line in [
        "connections = 1                    # twemproxy's default server_connections",
        "failure_limit = 2                  # twemproxy's default server_failure_limit",
        "retry_timeout = \"30s\"              # twemproxy's default server_retry_timeout",
        "# preconnect: true ignored (memroute connects on first use and keeps connections open)",
        "# backlog: 1024 ignored (memroute uses the system's listen backlog)",
        "max_connections = 100              # client_connections",
        "# timeout: twemproxy waits forever without one; memroute's default is 1s",
    ] {
        assert!(
            toml.lines().any(|l| l == line),
            "missing {line:?} in\n{toml}"
        );
    }
    let c = parse(&toml);
    assert_eq!(c.pools["p"].retry_timeout, Duration::from_secs(30));
}

#[test]
fn every_pool_gets_its_own_listener_unless_one_is_chosen() {
    let yaml = format!(
        "{ALPHA}beta:\n  listen: 127.0.0.1:22122\n  hash_tag: \"{{}}\"\n  servers:\n   - 127.0.0.1:11213:1\n\
         gamma:\n  listen: /run/gamma.sock 0666\n  client_connections: 64\n  servers:\n   - 127.0.0.1:11214:1\n"
    );
    let toml = import(&yaml, None).unwrap();
    let c = parse(&toml);
    assert_eq!(
        c.pools.keys().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"]
    );
    let listeners: Vec<(String, Option<&str>, u32)> = c
        .listeners
        .iter()
        .map(|l| (l.address.to_string(), l.pool.as_deref(), l.mode))
        .collect();
    assert_eq!(
        listeners,
        [
            ("127.0.0.1:22121".to_string(), None, 0o700),
            ("127.0.0.1:22122".to_string(), Some("beta"), 0o700),
            ("unix:/run/gamma.sock".to_string(), Some("gamma"), 0o666),
        ]
    );
    assert_eq!(c.listeners[2].max_connections, 64);
    // The first listener has no pool of its own: the routes send its keys to alpha.
    assert_eq!(c.routes[0].tiers, ["alpha"]);
    assert_eq!(c.pools["beta"].hash_tag, Some(*b"{}"));

    let toml = import(&yaml, Some("beta")).unwrap();
    assert!(toml.contains("# The file's other pools (alpha, gamma) listen on their own ports"));
    let c = parse(&toml);
    assert_eq!(c.pools.keys().collect::<Vec<_>>(), ["beta"]);
    assert_eq!(c.listen.address, "127.0.0.1:22122");
    assert!(matches!(
        import(&yaml, Some("delta")),
        Err(ImportError::UnknownPool { .. })
    ));
}

#[test]
fn pools_whose_names_would_clash_are_refused() {
    let yaml = "a/b:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:11211:1\n\
                a_b:\n  listen: 127.0.0.1:2\n  servers:\n   - 127.0.0.1:11212:1\n";
    let err = import(yaml, None).unwrap_err().to_string();
    assert!(err.contains("`a/b` and `a_b` would both be `a_b`"), "{err}");
}

#[test]
fn unsupported_settings_are_all_reported() {
    let errors = invalid(
        "r:\n  listen: /tmp/nc.sock 0999\n  redis: true\n  redis_auth: secret\n  hash: sha1\n  \
         timeout: soon\n  colour: blue\n  servers:\n   - /tmp/mc.sock:1\n",
    );
    let expected = [
        "pool `r`: `listen`: \"0999\" is not an octal file mode",
        "pool `r`: `redis`: redis pools are not supported",
        "pool `r`: `redis_auth`: redis settings are not supported",
        // the message after the key is ring::HashFn's own
        "pool `r`: `hash`: ",
        "pool `r`: `timeout`: expected a number",
        "pool `r`: `colour`: unknown twemproxy setting",
        "pool `r`: `servers`: \"/tmp/mc.sock:1\": unix socket servers are not supported",
    ];
    expect::messages(&errors, &expected, |e, want| e.starts_with(want));
}

#[test]
fn numbers_may_be_quoted_as_twemproxy_reads_them_as_text() {
    let yaml = "p:\n  listen: 127.0.0.1:22121\n  timeout: \"1500\"\n  auto_eject_hosts: \"false\"\n  servers: [\"127.0.0.1:11212:1\"]\n";
    let c = parse(&import(yaml, None).unwrap());
    assert_eq!(c.pools["p"].timeout, Duration::from_millis(1500));
    assert!(!c.pools["p"].eject);
}

#[test]
fn pool_names_that_need_quotes_are_quoted() {
    let yaml = "cache.v2:\n  listen: 127.0.0.1:22121\n  servers: [\"127.0.0.1:11212:1\"]\n";
    let toml = import(yaml, None).unwrap();
    assert!(toml.contains("[pools.\"cache.v2\"]"), "{toml}");
    assert!(parse(&toml).pools.contains_key("cache.v2"));
}

#[test]
fn pool_names_memroute_cannot_take_are_renamed_with_a_note() {
    // Valid for twemproxy, which takes any YAML key as a pool name.
    let yaml = "\"web cache/eu\":\n  listen: 127.0.0.1:22121\n  servers: [\"127.0.0.1:11212:1\"]\n";
    let toml = import(yaml, Some("web cache/eu")).unwrap();
    assert!(
        toml.contains("# twemproxy pool `web cache/eu` is `web_cache_eu` here"),
        "{toml}"
    );
    let c = parse(&toml);
    assert_eq!(c.pools.keys().collect::<Vec<_>>(), ["web_cache_eu"]);
    assert_eq!(c.routes[0].tiers, ["web_cache_eu"]);
}

#[test]
fn not_a_twemproxy_file_is_said_so() {
    assert!(matches!(
        import("- a\n- b\n", None),
        Err(ImportError::NotPools)
    ));
    assert!(matches!(import("a: [1\n", None), Err(ImportError::Yaml(_))));
    assert!(matches!(import("a: 1\n", None), Err(ImportError::NotPools)));
    let bad_weight = invalid("p:\n  listen: 127.0.0.1:1\n  servers: [\"127.0.0.1:11211:0\"]\n");
    assert!(
        bad_weight[0].contains("weight must be a number from 1"),
        "{bad_weight:?}"
    );
    let empty = invalid("p:\n  servers: []\n");
    assert_eq!(
        empty,
        [
            "pool `p`: `servers` is empty",
            "pool `p`: no `listen` address (twemproxy requires one)"
        ]
    );
}
