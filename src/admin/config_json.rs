//! `/config`: the running config as JSON, with the hash of the text it came from and when it
//! was loaded.
//!
//! Keys and value formats are the TOML file's (`timeout = "200ms"`, `hash = "fnv1a_64"`), with
//! every default filled in, so what the proxy runs on can be compared with what was written.
//! Built as a `serde_json::Value` by hand rather than by deriving `Serialize` on the config
//! types: the config module stays free of output concerns, and the format is visible here.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::config::{Config, LowerOnWrite, PoolConfig, RouteConfig, ServerConfig};
use crate::state::Snapshot;

/// `{"source_hash": …, "loaded_at": <Unix seconds>, "config": {…}}`.
pub fn render(snapshot: &Snapshot) -> Value {
    let loaded_at = snapshot
        .loaded_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "source_hash": snapshot.source_hash,
        "loaded_at": loaded_at,
        "config": config(&snapshot.config),
    })
}

/// The whole config, in the layout of the TOML file.
pub fn config(c: &Config) -> Value {
    let l = &c.listen;
    json!({
        "listen": {
            "address": l.address,
            "max_connections": l.max_connections,
            "allow_flush_all": l.allow_flush_all,
            "max_value_size": l.max_value_size,
            "max_line_size": l.max_line_size,
            "max_inflight": l.max_inflight,
            // Paths only: the files' contents (keys) never leave the process.
            "tls": l.tls.as_ref().map(|t| json!({
                "cert": t.cert.display().to_string(),
                "key": t.key.display().to_string(),
                "client_ca": t.client_ca.as_ref().map(|p| p.display().to_string()),
                "handshake_timeout": duration(t.handshake_timeout),
            })),
            "max_client_output": l.max_client_output,
        },
        "admin": c.admin.as_ref().map(|a| json!({ "address": a.address })),
        "pools": c.pools.iter().map(|(name, p)| (name.clone(), pool(p))).collect::<serde_json::Map<_, _>>(),
        "routes": c.routes.iter().map(route).collect::<Vec<_>>(),
    })
}

fn pool(p: &PoolConfig) -> Value {
    let mut v = json!({
        "servers": p.servers.iter().map(server).collect::<Vec<_>>(),
        "hash": p.hash.name(),
        "distribution": p.distribution.name(),
        "hash_tag": p.hash_tag.map(|t| String::from_utf8_lossy(&t).into_owned()),
        "timeout": duration(p.timeout),
        "connections": p.connections,
        "failure_limit": p.failure_limit,
        "retry_timeout": duration(p.retry_timeout),
        "eject": p.eject,
        "merge_gets": p.merge_gets,
        "reshard_warmup": duration(p.reshard_warmup),
        "tls": p.tls.as_ref().map(|t| json!({
            "ca": t.ca.as_ref().map(|p| p.display().to_string()),
            "server_name": t.server_name,
            "cert": t.cert.as_ref().map(|p| p.display().to_string()),
            "key": t.key.as_ref().map(|p| p.display().to_string()),
        })),
    });
    // Only where set, so configs without them read as before.
    if let (Some(failover), Some(o)) = (&p.failover, v.as_object_mut()) {
        o.insert("failover".into(), json!(failover));
        o.insert("failover_ttl".into(), json!(duration(p.failover_ttl)));
    }
    v
}

fn server(s: &ServerConfig) -> Value {
    json!({ "address": s.address, "weight": s.weight, "name": s.name })
}

fn route(r: &RouteConfig) -> Value {
    let mut v = json!({
        "prefix": r.prefix,
        "tiers": r.tiers,
        "warm": r.warm,
        "warm_ttl": r.warm_ttl.map(duration),
        "lower_on_write": match r.lower_on_write {
            LowerOnWrite::Delete => "delete",
            LowerOnWrite::Ignore => "ignore",
            LowerOnWrite::Set => "set",
        },
        "tombstone_ttl": duration(r.tombstone_ttl),
    });
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    if !r.replicas.is_empty() {
        o.insert("replicas".into(), json!(r.replicas));
        let mode = match r.write_mode {
            crate::config::WriteMode::Sync => "sync",
            crate::config::WriteMode::Async => "async",
        };
        o.insert("write_mode".into(), json!(mode));
        o.insert("read_miss_failover".into(), json!(r.read_miss_failover));
    }
    if let Some(s) = &r.shadow {
        o.insert(
            "shadow".into(),
            json!({ "pool": s.pool, "fraction": s.fraction }),
        );
    }
    v
}

/// A duration as the config file writes it: `"200ms"`, `"10s"`, `"1m 30s"`.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_the_toml_layout_and_value_formats() {
        let text = r#"
[listen]
address = "127.0.0.1:22122"
[admin]
address = "127.0.0.1:9101"
[pools.main]
servers = ["127.0.0.1:11211", "127.0.0.1:11212:2 b"]
timeout = "200ms"
hash_tag = "{}"
[[routes]]
prefix = ""
tiers = ["main"]
"#;
        let c = Config::parse(text, "test.toml").expect("valid config");
        let v = config(&c);
        assert_eq!(v["listen"]["address"], "127.0.0.1:22122");
        assert_eq!(v["admin"]["address"], "127.0.0.1:9101");
        let main = &v["pools"]["main"];
        assert_eq!(main["timeout"], "200ms");
        assert_eq!(main["retry_timeout"], "10s");
        assert_eq!(main["hash"], "fnv1a_64");
        assert_eq!(main["distribution"], "ketama");
        assert_eq!(main["hash_tag"], "{}");
        assert_eq!(
            main["servers"][1],
            json!({"address": "127.0.0.1:11212", "weight": 2, "name": "b"})
        );
        assert_eq!(main["servers"][0]["name"], "127.0.0.1");
        assert_eq!(
            v["routes"][0],
            json!({"prefix": "", "tiers": ["main"], "warm": true, "warm_ttl": null, "lower_on_write": "delete", "tombstone_ttl": "1h"})
        );
    }
}
