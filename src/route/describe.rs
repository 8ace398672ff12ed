//! What `/route?key=K` shows of a route (see [`crate::admin::key_route`]): each tier's pool and
//! owner ([`tier`]), and for replicated routes, gutters and shadows:
//!
//! ```json
//! {"replicas": [{"replica": 0, "pool": "east", "server": "…", "down": false, "home": true,
//!                "gutter": null}, …],
//!  "gutter": {"pool": "gutter", "server": "…", "serving": false, "failover_ttl": 10},
//!  "shadow": {"pool": "candidate", "server": "…", "fraction": 0.1, "selected": true}}
//! ```
//!
//! `home` marks the replica reads of the key try first; `serving` is true while the owner is
//! marked down and the gutter answers for it; `selected` says whether this key's requests are
//! copied to the shadow pool.

use serde_json::{Value, json};

use super::Route;
use super::gutter::Gutter;
use crate::backend::Pool;

/// Adds `replicas`, `gutter` and `shadow` to `answer` (a JSON object) where the route has them.
pub fn key(route: &Route, key: &[u8], answer: &mut Value) {
    let Some(map) = answer.as_object_mut() else {
        return;
    };
    if let Some(r) = &route.replicas {
        let home = r.home(key);
        let list: Vec<Value> = r
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = tier(i, &t.pool, key);
                if let Some(o) = v.as_object_mut() {
                    o.remove("tier");
                    o.insert("replica".into(), json!(i));
                    o.insert("home".into(), json!(i == home));
                    o.insert("gutter".into(), gutter(&t.pool, t.gutter.as_ref(), key));
                }
                v
            })
            .collect();
        map.insert("replicas".into(), Value::Array(list));
    }
    if route.gutter.is_some() {
        map.insert(
            "gutter".into(),
            gutter(route.owner(), route.gutter.as_ref(), key),
        );
    }
    if let Some(s) = &route.shadow {
        let server = s
            .pool
            .locate(key)
            .map(|srv| json!(srv.address()))
            .unwrap_or(Value::Null);
        map.insert(
            "shadow".into(),
            json!({
                "pool": s.pool.name(),
                "server": server,
                "fraction": s.fraction,
                "selected": s.selects(key),
            }),
        );
    }
}

/// The gutter server for `key` and whether it is serving now (the owner is marked down).
fn gutter(pool: &Pool, gutter: Option<&Gutter>, key: &[u8]) -> Value {
    let Some(g) = gutter else {
        return Value::Null;
    };
    let serving = pool.locate(key).is_ok_and(|s| s.health.is_down());
    let server = g
        .pool
        .locate(key)
        .map(|s| json!(s.address()))
        .unwrap_or(Value::Null);
    json!({
        "pool": g.pool.name(),
        "server": server,
        "serving": serving,
        "failover_ttl": g.ttl,
    })
}

/// One tier: its pool and the server that owns `key` there.
pub fn tier(index: usize, pool: &Pool, key: &[u8]) -> Value {
    match pool.locate_index(key) {
        Ok(i) => {
            let server = &pool.servers[i];
            json!({
                "tier": index,
                "pool": pool.name(),
                "server": server.address(),
                "down": server.health.is_down(),
            })
        }
        Err(e) => {
            json!({ "tier": index, "pool": pool.name(), "server": null, "error": e.to_string() })
        }
    }
}
