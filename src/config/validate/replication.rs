//! The keys of replicated routes, gutter failover and shadow traffic (see
//! [`crate::route::replicas`], [`crate::route::gutter`], [`crate::route::shadow`]), and the
//! combinations refused with a located error:
//!
//! - `replicas` with `tiers` on one route (fallback tiers behind replicated pools are not
//!   supported), fewer than two replicas, a pool twice, an unknown pool;
//! - `write_mode` / `read_miss_failover` on a route without `replicas`;
//! - a `shadow` pool that is one of the route's own pools, a fraction outside `(0, 1]`;
//! - `failover` naming the pool itself, an unknown pool, a gutter that has a `failover` of its
//!   own (no chains), together with `eject = true` (an ejecting pool moves a down server's keys
//!   to its other servers: there is nothing left for a gutter), or on a pool that is a tier of a
//!   route with fallback tiers (the tier semantics ask each tier, a gutter would be a tier of its
//!   own); `failover_ttl` without `failover` or not a whole number of seconds.

use std::collections::BTreeMap;

use super::Ctx;
use super::fields::{Fields, array};
use super::pools::known_pool;
use crate::config::raw::{Entry, Node, Value};
use crate::config::{PoolConfig, RouteConfig, ShadowConfig, WriteMode};

/// The route's `replicas`, `write_mode`, `read_miss_failover` and `shadow` (the other fields are
/// defaults, filled in by the caller).
pub(super) fn route(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    pools: &BTreeMap<String, PoolConfig>,
) -> RouteConfig {
    let replicas = match f.entry("replicas") {
        Some(e) => replicas(ctx, e, pools),
        None => Vec::new(),
    };
    if let (Some(e), Some(_)) = (f.entry("replicas"), f.entry("tiers")) {
        ctx.error(
            &e.key_span,
            "a route has `tiers` or `replicas`, not both: fallback tiers behind replicated pools are not supported",
        );
    }
    let without = |ctx: &mut Ctx<'_>, key: &str| {
        if let (Some(e), None) = (f.entry(key), f.entry("replicas")) {
            let msg = format!("`{key}` only applies to a route with `replicas`");
            ctx.error(&e.key_span, msg);
        }
    };
    without(ctx, "write_mode");
    without(ctx, "read_miss_failover");
    let write_mode = f
        .string(ctx, "write_mode")
        .and_then(|(text, node)| match text {
            "sync" => Some(WriteMode::Sync),
            "async" => Some(WriteMode::Async),
            _ => {
                let msg = format!("`write_mode` must be \"sync\" or \"async\", found {text:?}");
                ctx.error(&node.span, msg);
                None
            }
        });
    RouteConfig {
        replicas,
        write_mode: write_mode.unwrap_or_default(),
        read_miss_failover: f.boolean(ctx, "read_miss_failover").unwrap_or(false),
        shadow: shadow(ctx, f, pools),
        ..RouteConfig::default()
    }
}

fn replicas(ctx: &mut Ctx<'_>, entry: &Entry, pools: &BTreeMap<String, PoolConfig>) -> Vec<String> {
    let Some(list) = array(ctx, &entry.node, "replicas") else {
        return Vec::new();
    };
    if list.len() < 2 {
        ctx.error(
            &entry.node.span,
            "`replicas` needs at least two pools (a single pool is `tiers = [\"POOL\"]`)",
        );
    }
    super::pools::pool_list(ctx, list, "replicas", pools)
}

fn no_pool(ctx: &mut Ctx<'_>, node: &Node, name: &str, pools: &BTreeMap<String, PoolConfig>) {
    known_pool(ctx, name, &node.span, pools);
}

fn shadow(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    pools: &BTreeMap<String, PoolConfig>,
) -> Option<ShadowConfig> {
    let t = f.table(ctx, "shadow")?;
    let node = &f.entry("shadow")?.node;
    let sf = Fields::new(ctx, t, "`shadow`", &["pool", "fraction"], &[]);
    let pool = match sf.string(ctx, "pool") {
        Some((name, node)) => {
            if !pools.contains_key(name) {
                no_pool(ctx, node, name, pools);
            }
            Some(name.to_string())
        }
        None => {
            if sf.entry("pool").is_none() {
                ctx.error(&node.span, "`shadow` needs `pool = \"POOL\"`");
            }
            None
        }
    };
    let fraction = match sf.entry("fraction") {
        None => {
            ctx.error(
                &node.span,
                "`shadow` needs `fraction` (share of keys copied, e.g. 0.1)",
            );
            None
        }
        Some(e) => {
            let value = match e.node.value {
                Value::Float(x) => Some(x),
                Value::Integer(n) => Some(n as f64),
                _ => None,
            };
            match value {
                Some(x) if x > 0.0 && x <= 1.0 => Some(x),
                _ => {
                    ctx.error(
                        &e.node.span,
                        "`fraction` must be a number above 0 and at most 1, e.g. 0.1",
                    );
                    None
                }
            }
        }
    };
    Some(ShadowConfig {
        pool: pool?,
        fraction: fraction?,
    })
}

/// A shadow pool that serves the route itself would compare a pool with itself and double its
/// writes.
pub(super) fn check_shadow(
    ctx: &mut Ctx<'_>,
    f: &Fields<'_>,
    tiers: &[String],
    route: &RouteConfig,
) {
    let Some(shadow) = &route.shadow else {
        return;
    };
    if tiers
        .iter()
        .chain(&route.replicas)
        .any(|p| *p == shadow.pool)
    {
        let span = f
            .table(ctx, "shadow")
            .and_then(|t| t.get("pool"))
            .map(|e| e.node.span.clone());
        if let Some(span) = span {
            let msg = format!(
                "the shadow pool `{}` is one of this route's own pools: shadow traffic goes to a candidate pool the route does not use",
                shadow.pool
            );
            ctx.error(&span, msg);
        }
    }
}

/// Checks every pool's `failover` and `failover_ttl` against the other pools and the routes.
pub(super) fn gutters(
    ctx: &mut Ctx<'_>,
    entry: Option<&Entry>,
    pools: &BTreeMap<String, PoolConfig>,
    routes: &[RouteConfig],
) {
    let Some(Value::Table(table)) = entry.map(|e| &e.node.value) else {
        return;
    };
    for e in &table.entries {
        let (Value::Table(t), Some(pool)) = (&e.node.value, pools.get(&e.key)) else {
            continue;
        };
        // (A `failover_ttl` that is no TTL is reported where it is read: `Fields::ttl`.)
        if let Some(ttl) = t.get("failover_ttl") {
            if t.get("failover").is_none() {
                ctx.error(
                    &ttl.key_span,
                    "`failover_ttl` only applies to a pool with `failover`",
                );
            }
        }
        let (Some(fe), Some(gutter)) = (t.get("failover"), &pool.failover) else {
            continue;
        };
        let span = &fe.node.span;
        if *gutter == e.key {
            let msg = format!("pool `{gutter}` cannot fail over to itself");
            ctx.error(span, msg);
        } else if let Some(g) = pools.get(gutter) {
            if let Some(next) = &g.failover {
                let msg = format!(
                    "the gutter pool `{gutter}` has a `failover` of its own (to `{next}`): gutters do not chain"
                );
                ctx.error(span, msg);
            }
        } else {
            no_pool(ctx, &fe.node, gutter, pools);
        }
        if pool.eject {
            ctx.error(
                span,
                "`failover` and `eject = true` exclude each other: an ejecting pool moves a down server's keys to its other servers",
            );
        }
        for r in routes.iter().filter(|r| r.tiers.len() > 1) {
            if r.tiers.contains(&e.key) {
                let msg = format!(
                    "pool `{}` is a tier of the route with prefix {:?}, which has fallback tiers: `failover` serves plain and replicated routes only",
                    e.key, r.prefix
                );
                ctx.error(span, msg);
            }
        }
    }
}
