//! `[[routes]]`: key prefixes and their tiers (DESIGN §4).

use std::collections::{BTreeMap, HashMap};

use super::Ctx;
use super::fields::{Fields, array};
use crate::config::raw::{Entry, Node, Span, Table, Value};
use crate::config::{DEFAULT_TOMBSTONE_TTL, LowerOnWrite, PoolConfig, RouteConfig};
use crate::protocol::KEY_MAX_LENGTH;

pub(super) const ROUTE_KEYS: &[&str] = &[
    "prefix",
    "tiers",
    "warm",
    "warm_ttl",
    "lower_on_write",
    "replicas",
    "write_mode",
    "read_miss_failover",
    "shadow",
    "tombstone_ttl",
];

/// All routes. Without `[[routes]]`, a single pool gets the implied default route.
pub(super) fn routes(
    ctx: &mut Ctx<'_>,
    entry: Option<&Entry>,
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<RouteConfig> {
    let Some(entry) = entry else {
        return match pools.keys().collect::<Vec<_>>().as_slice() {
            // "no pools" is already reported.
            [] => Vec::new(),
            [only] => vec![RouteConfig {
                prefix: String::new(),
                tiers: vec![(*only).clone()],
                warm: true,
                warm_ttl: None,
                lower_on_write: LowerOnWrite::default(),
                tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
                ..RouteConfig::default()
            }],
            names => {
                let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                ctx.global(format!(
                    "no [[routes]] and several pools ({}): add a [[routes]] with prefix = \"\" and the tiers to use",
                    names.join(", ")
                ));
                Vec::new()
            }
        };
    };
    if let Value::Table(_) = entry.node.value {
        ctx.error(
            &entry.node.span,
            "write each route as [[routes]] (double brackets), not [routes]",
        );
        return Vec::new();
    }
    let Some(list) = array(ctx, &entry.node, "routes") else {
        return Vec::new();
    };
    let mut prefixes: HashMap<String, &Span> = HashMap::new();
    let mut routes = Vec::new();
    for node in list {
        let Value::Table(t) = &node.value else {
            let found = node.value.type_name();
            ctx.error(
                &node.span,
                format!("a route must be a [[routes]] table, found {found}"),
            );
            continue;
        };
        let route = route(ctx, node, t, pools);
        let span = t.get("prefix").map_or(&node.span, |e| &e.node.span);
        match prefixes.get(&route.prefix) {
            Some(first) => {
                let msg = format!(
                    "duplicate route prefix {:?} (also at line {})",
                    route.prefix,
                    ctx.line(first)
                );
                ctx.error(span, msg);
            }
            None => {
                prefixes.insert(route.prefix.clone(), span);
            }
        }
        routes.push(route);
    }
    // Without it, a key that matches no prefix would have nowhere to go.
    if !routes.iter().any(|r| r.prefix.is_empty()) {
        ctx.error(
            &entry.node.span,
            "no default route: add a [[routes]] with prefix = \"\" for keys that match no other prefix",
        );
    }
    routes
}

fn route(
    ctx: &mut Ctx<'_>,
    node: &Node,
    t: &Table,
    pools: &BTreeMap<String, PoolConfig>,
) -> RouteConfig {
    let f = Fields::new(ctx, t, "[[routes]]", ROUTE_KEYS, &[]);
    let prefix = match f.string(ctx, "prefix") {
        Some((p, node)) => {
            if p.len() > KEY_MAX_LENGTH || p.contains(|c: char| c.is_whitespace() || c.is_control())
            {
                let msg = "route `prefix` can never match: keys are at most 250 bytes without spaces or control characters";
                ctx.error(&node.span, msg);
            }
            p.to_string()
        }
        None => String::new(),
    };
    let warm_ttl = f.ttl(ctx, "warm_ttl");
    let lower_on_write = f
        .string(ctx, "lower_on_write")
        .and_then(|(text, node)| match text {
            "delete" => Some(LowerOnWrite::Delete),
            "ignore" => Some(LowerOnWrite::Ignore),
            "set" => Some(LowerOnWrite::Set),
            _ => {
                let msg = format!(
                    "`lower_on_write` must be \"delete\", \"ignore\" or \"set\", found {text:?}"
                );
                ctx.error(&node.span, msg);
                None
            }
        });
    let tombstone_ttl = f.ttl(ctx, "tombstone_ttl");
    let replication = super::replication::route(ctx, &f, pools);
    // A replicated route has no `tiers`: its first replica stands in as tier 0 for the code that
    // names one owner pool (`/route`, stats).
    let tiers = match (replication.replicas.first(), f.entry("tiers")) {
        (Some(first), None) => vec![first.clone()],
        _ => tiers(ctx, node, f.entry("tiers"), pools),
    };
    super::replication::check_shadow(ctx, &f, &tiers, &replication);
    RouteConfig {
        prefix,
        tiers,
        warm: f.boolean(ctx, "warm").unwrap_or(true),
        warm_ttl,
        lower_on_write: lower_on_write.unwrap_or_default(),
        tombstone_ttl: tombstone_ttl.unwrap_or(DEFAULT_TOMBSTONE_TTL),
        ..replication
    }
}

fn tiers(
    ctx: &mut Ctx<'_>,
    route: &Node,
    entry: Option<&Entry>,
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<String> {
    let no_tiers = "route has no tiers: add `tiers = [\"POOL\"]` (tier 0 owns the keys)";
    let Some(entry) = entry else {
        ctx.error(&route.span, no_tiers);
        return Vec::new();
    };
    let Some(list) = array(ctx, &entry.node, "tiers") else {
        return Vec::new();
    };
    if list.is_empty() {
        ctx.error(&entry.node.span, no_tiers);
    }
    super::pools::pool_list(ctx, list, "tiers", pools)
}
