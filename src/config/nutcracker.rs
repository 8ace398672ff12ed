//! `memroute import-nutcracker FILE`: a twemproxy (nutcracker) YAML config → the equivalent
//! memroute TOML, so a twemproxy user can switch binaries without moving a key (DESIGN §5).
//!
//! **Every pool on its own listener.** Each twemproxy pool has its own `listen` address (TCP
//! `host:port`, or a Unix socket `/path [mode]`); memroute gets the same listeners: the first
//! TCP pool on `[listen]` (the `[[routes]]` send every key to it), every other pool on a
//! `[[listeners]]` entry with `pool = NAME`, so each application keeps its address and its
//! keys' servers. `--pool NAME` imports one pool alone (one memroute per pool, as before).
//!
//! Servers keep twemproxy's `"host:port:weight [name]"` string, so ring names, and with them
//! every key's server, are identical. Keys twemproxy defaults differently from memroute
//! (`server_connections`, `server_failure_limit`, `server_retry_timeout`) are written out with
//! twemproxy's value, so behaviour stays the same.

use std::fmt::Write as _;

use serde_yaml::{Mapping, Value};

use super::Config;
use super::validate::{parse_address, parse_server_entry};
use crate::ring::{Distribution, HashFn};

/// twemproxy 0.5 defaults (`nc_conf.h`) where they differ from memroute's.
const TW_SERVER_CONNECTIONS: u64 = 1;
const TW_SERVER_FAILURE_LIMIT: u64 = 2;
const TW_SERVER_RETRY_TIMEOUT_MS: u64 = 30_000;

/// Why a twemproxy file cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Not YAML.
    #[error("not a twemproxy config: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// YAML, but not `pool name → settings`.
    #[error("not a twemproxy config: expected pool names, each with a mapping of settings")]
    NotPools,
    /// Two twemproxy pools whose names become the same memroute pool name.
    #[error(
        "pools `{first}` and `{second}` would both be `{name}` in memroute (pool names use \
         letters, digits, `_`, `-` and `.`): rename one, or import them apart with --pool"
    )]
    NameClash {
        /// One twemproxy name.
        first: String,
        /// The other.
        second: String,
        /// What both become.
        name: String,
    },
    /// `--pool` names no pool of the file.
    #[error("no pool named `{name}` in the file (pools: {})", available.join(", "))]
    UnknownPool {
        /// The requested pool.
        name: String,
        /// The pools in the file.
        available: Vec<String>,
    },
    /// Settings memroute cannot take over, one message per line.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Converts twemproxy YAML into memroute TOML: `only_pool`, or every pool of the file, each on
/// a listener with its twemproxy address.
pub fn import(yaml: &str, only_pool: Option<&str>) -> Result<String, ImportError> {
    let mut doc: Value = serde_yaml::from_str(yaml)?;
    doc.apply_merge()?; // YAML anchors and `<<:` merges, which shared settings often use
    let pools = doc.as_mapping().ok_or(ImportError::NotPools)?;
    let names: Vec<String> = pools
        .keys()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    if names.len() != pools.len() || names.is_empty() {
        return Err(ImportError::NotPools);
    }
    let chosen: Vec<String> = match only_pool {
        Some(want) if names.iter().any(|n| n == want) => vec![want.to_string()],
        Some(want) => {
            return Err(ImportError::UnknownPool {
                name: want.into(),
                available: names,
            });
        }
        None => names.clone(),
    };
    let mut errors = Vec::new();
    let mut imported = Vec::new();
    let mut taken: Vec<(String, String)> = Vec::new();
    for name in &chosen {
        let Some(settings) = pools[name.as_str()].as_mapping() else {
            return Err(ImportError::NotPools);
        };
        let memroute_name = pool_name(name);
        if let Some((first, _)) = taken.iter().find(|(_, m)| *m == memroute_name) {
            return Err(ImportError::NameClash {
                first: first.clone(),
                second: name.clone(),
                name: memroute_name,
            });
        }
        taken.push((name.clone(), memroute_name));
        match pool_settings(name, settings) {
            Ok(pool) => imported.push((name.as_str(), pool)),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ImportError::Invalid(errors));
    }
    let others: Vec<&str> = names
        .iter()
        .filter(|n| !chosen.contains(n))
        .map(String::as_str)
        .collect();
    let toml = render(&imported, &others);
    // The output must be a valid memroute config; anything else is a bug here, said plainly.
    Config::parse(&toml, "imported config")
        .map_err(|e| ImportError::Invalid(e.0.iter().map(ToString::to_string).collect()))?;
    Ok(toml)
}

/// A twemproxy `listen`.
#[derive(Debug, Clone, PartialEq)]
enum Listen {
    /// `host:port`.
    Tcp(String),
    /// `/path [mode]`: twemproxy chmods the socket only when a mode is given.
    Unix(String, Option<u32>),
}

/// Everything memroute needs from one pool's settings.
#[derive(Default)]
struct Pool {
    listen: Option<Listen>,
    /// `client_connections` when it sets a limit (twemproxy's 0 is "no limit").
    max_connections: Option<u64>,
    servers: Vec<String>,
    /// `key = value` lines of `[pools.NAME]`, each with its comment.
    lines: Vec<(String, String)>,
    /// Comment lines about settings that were left out.
    ignored: Vec<String>,
}

fn pool_settings(name: &str, settings: &Mapping) -> Result<Pool, Vec<String>> {
    let mut errors = Vec::new();
    let mut pool = Pool::default();
    for (key, value) in settings {
        let key = key.as_str().unwrap_or("?");
        if let Err(e) = setting(&mut pool, key, value) {
            errors.push(format!("pool `{name}`: `{key}`: {e}"));
        }
    }
    // Where twemproxy's default differs from memroute's, write twemproxy's out.
    let defaults = [
        (
            "server_connections",
            format!("connections = {TW_SERVER_CONNECTIONS}"),
        ),
        (
            "server_failure_limit",
            format!("failure_limit = {TW_SERVER_FAILURE_LIMIT}"),
        ),
        (
            "server_retry_timeout",
            format!("retry_timeout = {}", duration(TW_SERVER_RETRY_TIMEOUT_MS)),
        ),
    ];
    for (key, line) in defaults {
        if !settings.contains_key(key) {
            pool.lines
                .push((line, format!("twemproxy's default {key}")));
        }
    }
    if !settings.contains_key("timeout") {
        pool.ignored.push(
            "timeout: twemproxy waits forever without one; memroute's default is 1s".to_string(),
        );
    }
    // Only when absent: a key that was present but wrong is already reported above.
    match settings
        .get("servers")
        .map(|v| v.as_sequence().map(Vec::is_empty))
    {
        None => errors.push(format!("pool `{name}`: no `servers`")),
        Some(Some(true)) => errors.push(format!("pool `{name}`: `servers` is empty")),
        Some(_) => {}
    }
    if !settings.contains_key("listen") {
        errors.push(format!(
            "pool `{name}`: no `listen` address (twemproxy requires one)"
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(pool)
}

/// Takes one twemproxy setting into `pool`.
fn setting(pool: &mut Pool, key: &str, value: &Value) -> Result<(), String> {
    let mut line = |toml: String, from: &str| pool.lines.push((toml, from.to_string()));
    match key {
        "listen" => pool.listen = Some(listen(string(value)?.trim())?),
        "client_connections" => {
            let n = number(value, 0)?;
            if n > 0 {
                pool.max_connections = Some(n);
            }
        }
        "hash" => {
            let hash = string(value)?;
            hash.parse::<HashFn>()?;
            line(format!("hash = {}", quote(hash)), key);
        }
        "distribution" => {
            let distribution = string(value)?;
            distribution.parse::<Distribution>()?;
            line(format!("distribution = {}", quote(distribution)), key);
        }
        "hash_tag" => {
            let tag = string(value)?;
            if tag.len() != 2 || !tag.is_ascii() {
                return Err(format!("must be two characters, found {tag:?}"));
            }
            line(format!("hash_tag = {}", quote(tag)), key);
        }
        "timeout" => line(
            format!("timeout = {}", duration(number(value, 1)?)),
            "timeout, in ms",
        ),
        "server_connections" => line(format!("connections = {}", number(value, 1)?), key),
        "server_failure_limit" => line(format!("failure_limit = {}", number(value, 1)?), key),
        "server_retry_timeout" => line(
            format!("retry_timeout = {}", duration(number(value, 1)?)),
            "server_retry_timeout, in ms",
        ),
        "auto_eject_hosts" => line(format!("eject = {}", boolean(value)?), key),
        "servers" => pool.servers = servers(value)?,
        "redis" if boolean(value)? => {
            return Err("redis pools are not supported: memroute speaks memcached only".into());
        }
        "redis" => {}
        "redis_auth" | "redis_db" => {
            return Err("redis settings are not supported: memroute speaks memcached only".into());
        }
        "preconnect" | "backlog" | "tcpkeepalive" => {
            let why = match key {
                "preconnect" => "memroute connects on first use and keeps connections open",
                "backlog" => "memroute uses the system's listen backlog",
                _ => "not configurable in memroute",
            };
            pool.ignored
                .push(format!("{key}: {} ignored ({why})", scalar(value)));
        }
        _ => return Err("unknown twemproxy setting".into()),
    }
    Ok(())
}

/// twemproxy's `listen`: `host:port`, or a Unix socket `/path [mode]` with the mode in octal.
fn listen(listen: &str) -> Result<Listen, String> {
    if !listen.starts_with('/') {
        parse_address(listen, true)?;
        return Ok(Listen::Tcp(listen.to_string()));
    }
    let (path, mode) = match listen.rsplit_once(' ') {
        Some((path, mode)) => {
            let mode = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| format!("{mode:?} is not an octal file mode"))?;
            (path.trim_end(), Some(mode))
        }
        None => (listen, None),
    };
    crate::config::validate::parse_listen_address(&format!("unix:{path}"))?;
    Ok(Listen::Unix(path.to_string(), mode))
}

/// twemproxy's `servers`: a list of `"host:port:weight [name]"`, kept as written.
fn servers(value: &Value) -> Result<Vec<String>, String> {
    let list = value
        .as_sequence()
        .ok_or("must be a list of \"host:port:weight [name]\"")?;
    let mut servers = Vec::with_capacity(list.len());
    for server in list {
        let server = string(server)?;
        if server.starts_with('/') {
            return Err(format!("{server:?}: unix socket servers are not supported"));
        }
        parse_server_entry(server)?;
        servers.push(server.trim().to_string());
    }
    Ok(servers)
}

/// The TOML for `pools`: a header, the listeners, the pools, one route. (Writing to a
/// `String` cannot fail: the `writeln!` results are ignored.)
fn render(pools: &[(&str, Pool)], others: &[&str]) -> String {
    let mut out = String::new();
    render_header(&mut out, pools, others);
    let route_pool = render_listeners(&mut out, pools);
    // twemproxy's stats port is a command-line flag, so there is nothing to import; offer ours.
    let _ = writeln!(
        out,
        "\n# Prometheus metrics (twemproxy's stats port was a command-line flag):"
    );
    let _ = writeln!(out, "# [admin]\n# address = \"127.0.0.1:9100\"");
    for (name, pool) in pools {
        render_pool(&mut out, name, pool);
    }
    let _ = writeln!(
        out,
        "\n[[routes]]\nprefix = \"\"\ntiers = [{}]",
        quote(&route_pool)
    );
    out
}

fn render_header(w: &mut String, pools: &[(&str, Pool)], others: &[&str]) {
    let names: Vec<String> = pools.iter().map(|(n, _)| format!("`{n}`")).collect();
    let _ = writeln!(
        w,
        "# Imported from twemproxy pool{} {} by `memroute import-nutcracker`.",
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    let _ = writeln!(
        w,
        "# Servers keep twemproxy's \"host:port:weight [name]\" form: same ring, same key placement."
    );
    if pools.len() > 1 {
        let _ = writeln!(
            w,
            "# Each pool listens where it listened in twemproxy and sends every key to its own servers."
        );
    }
    if !others.is_empty() {
        let _ = writeln!(
            w,
            "# The file's other pools ({}) listen on their own ports: import each with --pool NAME\n\
             # and run it as its own memroute (or import the whole file, without --pool).",
            others.join(", ")
        );
    }
}

/// `[listen]` for the first TCP pool, a `[[listeners]]` entry for every other pool; returns
/// the pool the `[[routes]]` send keys to.
fn render_listeners(w: &mut String, pools: &[(&str, Pool)]) -> String {
    // The first TCP pool is `[listen]`, reached through the `[[routes]]`; with only Unix
    // sockets there is no `[listen] address`, and the routes still need a pool.
    let first_tcp = pools
        .iter()
        .enumerate()
        .find_map(|(i, (name, pool))| match &pool.listen {
            Some(Listen::Tcp(address)) => Some((i, *name, pool, address)),
            _ => None,
        });
    let route_pool = pool_name(
        first_tcp
            .map(|(_, name, ..)| name)
            .or_else(|| pools.first().map(|(name, _)| *name))
            .unwrap_or("pool"),
    );
    if let Some((_, name, pool, address)) = first_tcp {
        let _ = writeln!(w, "\n[listen]");
        if pools.len() == 1 {
            let _ = writeln!(w, "address = {}", quote(address));
        } else {
            let _ = writeln!(
                w,
                "{:<34} # pool `{name}` (through the [[routes]])",
                format!("address = {}", quote(address))
            );
        }
        render_max_connections(w, pool);
    }
    let first_tcp = first_tcp.map(|(i, ..)| i);
    for (i, (name, pool)) in pools.iter().enumerate() {
        if Some(i) != first_tcp {
            render_listener(w, name, pool);
        }
    }
    route_pool
}

fn render_listener(w: &mut String, name: &str, pool: &Pool) {
    let _ = writeln!(w, "\n[[listeners]]");
    match &pool.listen {
        Some(Listen::Tcp(address)) => {
            let _ = writeln!(w, "address = {}", quote(address));
        }
        Some(Listen::Unix(path, mode)) => {
            let _ = writeln!(w, "address = {}", quote(&format!("unix:{path}")));
            let _ = match mode {
                Some(m) => writeln!(w, "mode = 0o{m:o}"),
                None => writeln!(
                    w,
                    "# no mode in twemproxy (its umask decides); memroute's default is 0o700"
                ),
            };
        }
        None => {}
    }
    render_max_connections(w, pool);
    let _ = writeln!(w, "pool = {}", quote(&pool_name(name)));
}

fn render_max_connections(w: &mut String, pool: &Pool) {
    if let Some(n) = pool.max_connections {
        let _ = writeln!(
            w,
            "{:<34} # client_connections",
            format!("max_connections = {n}")
        );
    }
}

fn render_pool(w: &mut String, name: &str, pool: &Pool) {
    // twemproxy takes any YAML key as a pool name; ours label metrics, so they are
    // restricted. The name plays no part in placement (the ring uses server names).
    let pool_name = pool_name(name);
    if pool_name != name {
        let _ = writeln!(
            w,
            "\n# twemproxy pool `{name}` is `{pool_name}` here: memroute pool names use letters, \
             digits, `_`, `-` and `.`."
        );
    }
    let _ = writeln!(w, "\n[pools.{}]\nservers = [", key(&pool_name));
    for server in &pool.servers {
        let _ = writeln!(w, "  {},", quote(server));
    }
    let _ = writeln!(w, "]");
    for (line, from) in &pool.lines {
        let _ = writeln!(w, "{line:<34} # {from}");
    }
    for note in &pool.ignored {
        let _ = writeln!(w, "# {note}");
    }
}

/// `name` with every character a memroute pool name cannot have replaced by `_`.
fn pool_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "pool".to_string()
    } else {
        cleaned
    }
}

fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", scalar(value)))
}

/// twemproxy reads numbers with `nc_atoi`, so `"400"` is as good as `400`.
fn number(value: &Value, min: u64) -> Result<u64, String> {
    let n = match value {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    };
    n.filter(|&n| n >= min).ok_or_else(|| {
        format!(
            "expected a number of at least {min}, found {}",
            scalar(value)
        )
    })
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        v => Err(format!("expected true or false, found {}", scalar(v))),
    }
}

/// Milliseconds as a memroute duration.
fn duration(ms: u64) -> String {
    let text = if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    };
    quote(&text)
}

/// A value as YAML would print it, for messages and comments.
fn scalar(value: &Value) -> String {
    serde_yaml::to_string(value).map_or_else(|_| "?".into(), |s| s.trim_end().to_string())
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests;
