//! `[pools.NAME]` tables and their server entries (DESIGN §2, §3).

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use super::Ctx;
use super::address::{MAX_WEIGHT, check_name, parse_address, parse_server_entry, server};
use super::fields::{Fields, array, string, suggest};
use crate::config::raw::{Entry, Node, Span, Table, Value};
use crate::config::{
    DEFAULT_CONNECTIONS, DEFAULT_FAILOVER_TTL, DEFAULT_FAILURE_LIMIT, DEFAULT_RESHARD_WARMUP,
    DEFAULT_RETRY_TIMEOUT, DEFAULT_TIMEOUT, PoolConfig, ServerConfig,
};

pub(super) const POOL_KEYS: &[&str] = &[
    "servers",
    "hash",
    "distribution",
    "hash_tag",
    "timeout",
    "connections",
    "failure_limit",
    "retry_timeout",
    "eject",
    "merge_gets",
    "tls",
    "failover",
    "failover_ttl",
    "reshard_warmup",
];
/// twemproxy users will type their old key names: point them at ours.
const TWEMPROXY_KEYS: &[(&str, &str)] = &[
    ("auto_eject_hosts", "eject"),
    ("server_connections", "connections"),
    ("server_failure_limit", "failure_limit"),
    ("server_retry_timeout", "retry_timeout"),
    ("listen", "[listen] address"),
];
pub(super) const SERVER_KEYS: &[&str] = &["address", "weight", "name"];
/// More shared pipelined connections than this only costs backend sockets.
const MAX_CONNECTIONS: u64 = 1024;

/// All pools; a pool with errors is still returned (with defaults) so routes naming it do not
/// get a second, misleading "no such pool" error.
pub(super) fn pools(ctx: &mut Ctx<'_>, entry: Option<&Entry>) -> BTreeMap<String, PoolConfig> {
    let mut pools = BTreeMap::new();
    let Some(entry) = entry else {
        ctx.global("no pools: add a [pools.NAME] table with `servers = [\"host:port\"]`");
        return pools;
    };
    let Value::Table(table) = &entry.node.value else {
        ctx.error(
            &entry.node.span,
            "`pools` must be a table of [pools.NAME] tables",
        );
        return pools;
    };
    if table.entries.is_empty() {
        ctx.error(&entry.key_span, "no pools: add a [pools.NAME] table");
    }
    for e in &table.entries {
        if !e
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            || e.key.is_empty()
        {
            ctx.error(
                &e.key_span,
                format!(
                    "pool name {:?} may only use letters, digits, `_`, `-` and `.`",
                    e.key
                ),
            );
        }
        let pool = match &e.node.value {
            Value::Table(t) => pool(ctx, &e.key, &e.node, t),
            other => {
                let found = other.type_name();
                ctx.error(
                    &e.node.span,
                    format!("pool `{}` must be a table, found {found}", e.key),
                );
                pool(ctx, &e.key, &e.node, &Table { entries: vec![] })
            }
        };
        pools.insert(e.key.clone(), pool);
    }
    pools
}

fn pool(ctx: &mut Ctx<'_>, name: &str, node: &Node, t: &Table) -> PoolConfig {
    let f = Fields::new(
        ctx,
        t,
        &format!("[pools.{name}]"),
        POOL_KEYS,
        TWEMPROXY_KEYS,
    );
    let servers = match f.entry("servers") {
        Some(e) => servers(ctx, name, &e.node),
        None => {
            ctx.error(&node.span, format!("pool `{name}` has no `servers`"));
            Vec::new()
        }
    };
    let hash_tag = f
        .string(ctx, "hash_tag")
        .and_then(|(tag, node)| match tag.as_bytes() {
            &[open, close] => Some([open, close]),
            _ => {
                let msg = format!(
                    "`hash_tag` must be exactly two ASCII characters, e.g. \"{{}}\"; found {tag:?}"
                );
                ctx.error(&node.span, msg);
                None
            }
        });
    let timeout = f.duration(ctx, "timeout").and_then(|d| {
        if d.is_zero() {
            ctx.error(
                &f.entry("timeout")?.node.span,
                "`timeout` must be more than 0",
            );
            return None;
        }
        Some(d)
    });
    let tls = super::tls::backend(ctx, name, f.entry("tls"), &servers);
    PoolConfig {
        name: name.to_string(),
        tls,
        servers,
        hash: parsed(ctx, &f, "hash").unwrap_or_default(),
        distribution: parsed(ctx, &f, "distribution").unwrap_or_default(),
        hash_tag,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        connections: f
            .integer(ctx, "connections", 1, MAX_CONNECTIONS)
            .map_or(DEFAULT_CONNECTIONS, |n| n as usize),
        failure_limit: f
            .integer(ctx, "failure_limit", 1, u32::MAX.into())
            .map_or(DEFAULT_FAILURE_LIMIT, |n| n as u32),
        retry_timeout: f
            .duration(ctx, "retry_timeout")
            .unwrap_or(DEFAULT_RETRY_TIMEOUT),
        eject: f.boolean(ctx, "eject").unwrap_or(false),
        merge_gets: f.boolean(ctx, "merge_gets").unwrap_or(true),
        // Checked against the other pools and the routes in [`super::replication::gutters`].
        failover: f.string(ctx, "failover").map(|(p, _)| p.to_string()),
        failover_ttl: f.ttl(ctx, "failover_ttl").unwrap_or(DEFAULT_FAILOVER_TTL),
        reshard_warmup: f
            .duration(ctx, "reshard_warmup")
            .unwrap_or(DEFAULT_RESHARD_WARMUP),
    }
}

/// A string key whose value names a variant (`hash`, `distribution`): the type's own `FromStr`
/// decides, so a hash added to `ring` is accepted here with no change.
fn parsed<T: FromStr<Err = String>>(ctx: &mut Ctx<'_>, f: &Fields<'_>, key: &str) -> Option<T> {
    let (text, node) = f.string(ctx, key)?;
    text.parse()
        .map_err(|e| ctx.error(&node.span, format!("`{key}`: {e}")))
        .ok()
}

fn servers(ctx: &mut Ctx<'_>, pool: &str, node: &Node) -> Vec<ServerConfig> {
    let Some(list) = array(ctx, node, "servers") else {
        return Vec::new();
    };
    if list.is_empty() {
        ctx.error(&node.span, format!("pool `{pool}` has no servers"));
    }
    let mut by_name: HashMap<String, Span> = HashMap::new();
    let mut by_address: HashMap<String, Span> = HashMap::new();
    let mut servers = Vec::new();
    for node in list {
        let server = match &node.value {
            Value::String(s) => parse_server_entry(s)
                .map_err(|e| ctx.error(&node.span, e))
                .ok(),
            Value::Table(t) => server_table(ctx, node, t),
            other => {
                let found = other.type_name();
                let msg = format!(
                    "a server is \"host:port[:weight [name]]\" or {{ address, weight, name }}, found {found}"
                );
                ctx.error(&node.span, msg);
                None
            }
        };
        let Some(server) = server else { continue };
        // The address first: an unnamed server written twice also repeats its ring name (its
        // address), and "give each server a distinct name" would point at the wrong fix.
        if let Some(first) = by_address.get(&server.address) {
            let msg = format!(
                "server `{}` is listed twice in pool `{pool}` (also at line {}); use `weight` instead",
                server.address,
                ctx.line(first)
            );
            ctx.error(&node.span, msg);
        } else if let Some(first) = by_name.get(&server.name) {
            // Two servers with one ring name would share ketama points; twemproxy refuses that too.
            let msg = format!(
                "duplicate server name `{}` in pool `{pool}` (also at line {}); give each server a distinct name",
                server.name,
                ctx.line(first)
            );
            ctx.error(&node.span, msg);
        }
        by_name
            .entry(server.name.clone())
            .or_insert_with(|| node.span.clone());
        by_address
            .entry(server.address.clone())
            .or_insert_with(|| node.span.clone());
        servers.push(server);
    }
    servers
}

fn server_table(ctx: &mut Ctx<'_>, node: &Node, t: &Table) -> Option<ServerConfig> {
    let f = Fields::new(ctx, t, "a server table", SERVER_KEYS, &[]);
    let weight = f.integer(ctx, "weight", 1, MAX_WEIGHT);
    let name = match f.entry("name") {
        Some(e) => match string(ctx, &e.node, "name").map(check_name) {
            Some(Ok(name)) => Some(name),
            Some(Err(msg)) => {
                ctx.error(&e.node.span, msg);
                None
            }
            None => None,
        },
        None => None,
    };
    let Some((address, node)) = f.string(ctx, "address") else {
        if f.entry("address").is_none() {
            ctx.error(&node.span, "server table needs `address = \"host:port\"`");
        }
        return None;
    };
    let (host, port) = parse_address(address, false)
        .map_err(|e| ctx.error(&node.span, e))
        .ok()?;
    let weight = match f.entry("weight") {
        Some(_) => weight? as u32,
        None => 1,
    };
    Some(server(host, port, weight, name))
}

/// A list of pool names (`tiers`, `replicas`): each a string naming a known pool, none twice.
/// The names come back as written, an unknown one included (its error is reported).
pub(super) fn pool_list(
    ctx: &mut Ctx<'_>,
    list: &[Node],
    what: &str,
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for node in list {
        let Some(name) = string(ctx, node, what) else {
            continue;
        };
        if names.iter().any(|n| n == name) {
            ctx.error(&node.span, format!("pool `{name}` is twice in `{what}`"));
        } else {
            known_pool(ctx, name, &node.span, pools);
        }
        names.push(name.to_string());
    }
    names
}

/// True when `name` is a pool of `pools`; else reports "no pool named …" at `span`, with the
/// closest name or the list of pools.
pub(super) fn known_pool(
    ctx: &mut Ctx<'_>,
    name: &str,
    span: &Span,
    pools: &BTreeMap<String, PoolConfig>,
) -> bool {
    if pools.contains_key(name) {
        return true;
    }
    let names: Vec<&str> = pools.keys().map(String::as_str).collect();
    let msg = match suggest(name, &names) {
        Some(s) => format!("no pool named `{name}`; did you mean `{s}`?"),
        None => format!("no pool named `{name}` (pools: {})", names.join(", ")),
    };
    ctx.error(span, msg);
    false
}
