//! `[[listeners]]`: client listeners beyond `[listen]`'s, each with its own address (TCP
//! `host:port`, or `unix:/path` with a `mode`), connection limit and, optionally, a pool that
//! takes every key it receives (instead of the `[[routes]]`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::Ctx;
use super::address::parse_address;
use super::fields::{Fields, array};
use super::pools::known_pool;
use crate::config::raw::{Entry, Node, Span, Value};
use crate::config::{DEFAULT_UNIX_MODE, ListenAddress, ListenerConfig, PoolConfig};
use crate::tls::ListenTls;

const LISTENER_KEYS: &[&str] = &["address", "mode", "max_connections", "pool", "tls"];

/// Reads `[[listeners]]`; `defaults` are `[listen] max_connections` and `[listen] tls`. Every
/// listener of the result has a distinct address, also distinct from `first` (`[listen]
/// address`).
pub(super) fn listeners(
    ctx: &mut Ctx<'_>,
    entry: Option<&Entry>,
    first: Option<(&ListenAddress, &Span)>,
    defaults: (usize, Option<&ListenTls>),
    pools: &BTreeMap<String, PoolConfig>,
) -> Vec<ListenerConfig> {
    let Some(entry) = entry else {
        return Vec::new();
    };
    let Some(list) = array(ctx, &entry.node, "listeners") else {
        return Vec::new();
    };
    let mut seen: HashMap<ListenAddress, usize> = HashMap::new();
    if let Some((address, span)) = first {
        seen.insert(address.clone(), ctx.line(span));
    }
    let mut out = Vec::new();
    for node in list {
        let Some((listener, span)) = listener(ctx, node, defaults, pools) else {
            continue;
        };
        if let Some(line) = seen.get(&listener.address) {
            ctx.error(
                span,
                format!(
                    "listener address `{}` is already used at line {line}",
                    listener.address
                ),
            );
            continue;
        }
        seen.insert(listener.address.clone(), ctx.line(span));
        out.push(listener);
    }
    out
}

/// One `[[listeners]]` entry, with the span of its address.
fn listener<'a>(
    ctx: &mut Ctx<'_>,
    node: &'a Node,
    (default_max, default_tls): (usize, Option<&ListenTls>),
    pools: &BTreeMap<String, PoolConfig>,
) -> Option<(ListenerConfig, &'a Span)> {
    let Value::Table(t) = &node.value else {
        ctx.error(
            &node.span,
            format!(
                "each [[listeners]] entry must be a table, found {}",
                node.value.type_name()
            ),
        );
        return None;
    };
    let f = Fields::new(
        ctx,
        t,
        "[[listeners]]",
        LISTENER_KEYS,
        &[("listen", "address")],
    );
    let Some((text, address_node)) = f.string(ctx, "address") else {
        if f.entry("address").is_none() {
            ctx.error(&node.span, "[[listeners]] entry without `address`");
        }
        return None;
    };
    let address = match parse_listen_address(text) {
        Ok(a) => a,
        Err(e) => {
            ctx.error(&address_node.span, format!("`address`: {e}"));
            return None;
        }
    };
    let mode = mode(ctx, &f, &address);
    let max_connections = f
        .integer(ctx, "max_connections", 1, u32::MAX.into())
        .map_or(default_max, |n| n as usize);
    let pool = f
        .string(ctx, "pool")
        .filter(|(name, pool_node)| known_pool(ctx, name, &pool_node.span, pools))
        .map(|(name, _)| name.to_string());
    let tls = tls(ctx, f.entry("tls"), &address, default_tls);
    let listener = ListenerConfig {
        address,
        mode,
        max_connections,
        pool,
        tls,
    };
    Some((listener, &address_node.span))
}

/// `mode`: the file mode of a Unix socket listener.
fn mode(ctx: &mut Ctx<'_>, f: &Fields<'_>, address: &ListenAddress) -> u32 {
    match (f.entry("mode"), address) {
        (None, _) => DEFAULT_UNIX_MODE,
        (Some(e), ListenAddress::Tcp(_)) => {
            ctx.error(
                &e.key_span,
                "`mode` is for Unix socket listeners (address = \"unix:/path\")",
            );
            DEFAULT_UNIX_MODE
        }
        (Some(_), ListenAddress::Unix(_)) => f
            .integer(ctx, "mode", 0, 0o777)
            .map_or(DEFAULT_UNIX_MODE, |m| m as u32),
    }
}

/// TLS of a listener: the entry's own table, `false` for plain, else `[listen]`'s; TCP only.
fn tls(
    ctx: &mut Ctx<'_>,
    entry: Option<&Entry>,
    address: &ListenAddress,
    default: Option<&ListenTls>,
) -> Option<ListenTls> {
    match (entry, address) {
        (None, ListenAddress::Tcp(_)) => default.cloned(),
        (None, ListenAddress::Unix(_)) => None,
        (Some(e), ListenAddress::Unix(_)) => {
            ctx.error(&e.key_span, "`tls` is for TCP listeners, not Unix sockets");
            None
        }
        (Some(e), ListenAddress::Tcp(_)) => match &e.node.value {
            Value::Boolean(false) => None,
            Value::Boolean(true) => {
                ctx.error(
                    &e.node.span,
                    "`tls = true`: give the table { cert = \"...\", key = \"...\" }, or false for plain",
                );
                None
            }
            _ => super::tls::listener(ctx, Some(e), "[[listeners]] tls"),
        },
    }
}

/// `unix:/absolute/path` or a `host:port` to bind.
pub fn parse_listen_address(text: &str) -> Result<ListenAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "a Unix socket needs an absolute path, found {path:?} (write \"unix:/run/memroute.sock\")"
            ));
        }
        // sockaddr_un has 108 bytes for the path, including its terminating NUL.
        if path.len() > 107 {
            return Err(format!(
                "Unix socket path is {} bytes, at most 107 fit",
                path.len()
            ));
        }
        return Ok(ListenAddress::Unix(PathBuf::from(path)));
    }
    parse_address(text, true)?;
    Ok(ListenAddress::Tcp(text.to_string()))
}
