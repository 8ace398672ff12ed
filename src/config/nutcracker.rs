//! `memroute import-nutcracker FILE`: a twemproxy (nutcracker) YAML config → the equivalent
//! memroute TOML, so a twemproxy user can switch binaries without moving a key (DESIGN §5).
//!
//! **One pool per memroute.** Each twemproxy pool has its own `listen` port; memroute has one
//! listener, and its routes split keys by prefix, not by port. Merging several pools behind one
//! port would send each application's keys somewhere new, so a file with several pools needs
//! `--pool NAME`, and each pool becomes its own memroute process and config.
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
    /// Several pools and none chosen.
    #[error(
        "the file has {} pools ({}), each with its own listen address, and memroute has one \
         listener: run one memroute per pool and choose it with --pool NAME",
        names.len(),
        names.join(", ")
    )]
    ChoosePool {
        /// The pools in the file.
        names: Vec<String>,
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

/// Converts twemproxy YAML into memroute TOML for one pool: `only_pool`, or the file's only pool.
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
    let name = match only_pool {
        Some(want) if names.iter().any(|n| n == want) => want.to_string(),
        Some(want) => {
            return Err(ImportError::UnknownPool {
                name: want.into(),
                available: names,
            });
        }
        None if names.len() == 1 => names[0].clone(),
        None => return Err(ImportError::ChoosePool { names }),
    };
    let settings = pools[name.as_str()]
        .as_mapping()
        .ok_or(ImportError::NotPools)?;
    let others: Vec<&str> = names
        .iter()
        .filter(|n| **n != name)
        .map(String::as_str)
        .collect();
    let toml = pool_toml(&name, settings, &others)?;
    // The output must be a valid memroute config; anything else is a bug here, said plainly.
    Config::parse(&toml, "imported config")
        .map_err(|e| ImportError::Invalid(e.0.iter().map(ToString::to_string).collect()))?;
    Ok(toml)
}

/// Everything memroute needs from one pool's settings.
#[derive(Default)]
struct Pool {
    listen: Option<String>,
    servers: Vec<String>,
    /// `key = value` lines of `[pools.NAME]`, each with its comment.
    lines: Vec<(String, String)>,
    /// Comment lines about settings that were left out.
    ignored: Vec<String>,
}

fn pool_toml(name: &str, settings: &Mapping, others: &[&str]) -> Result<String, ImportError> {
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
    let listen = pool.listen.take().unwrap_or_default();
    if !errors.is_empty() {
        return Err(ImportError::Invalid(errors));
    }
    Ok(render(name, &listen, &pool, others))
}

/// Takes one twemproxy setting into `pool`.
fn setting(pool: &mut Pool, key: &str, value: &Value) -> Result<(), String> {
    let mut line = |toml: String, from: &str| pool.lines.push((toml, from.to_string()));
    match key {
        "listen" => {
            let listen = string(value)?;
            if listen.starts_with('/') {
                return Err("unix sockets are not supported; listen on host:port".into());
            }
            parse_address(listen, true)?;
            pool.listen = Some(listen.to_string());
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
        "servers" => {
            let list = value
                .as_sequence()
                .ok_or("must be a list of \"host:port:weight [name]\"")?;
            for server in list {
                let server = string(server)?;
                if server.starts_with('/') {
                    return Err(format!("{server:?}: unix socket servers are not supported"));
                }
                parse_server_entry(server)?;
                pool.servers.push(server.trim().to_string());
            }
        }
        "redis" if boolean(value)? => {
            return Err("redis pools are not supported: memroute speaks memcached only".into());
        }
        "redis" => {}
        "redis_auth" | "redis_db" => {
            return Err("redis settings are not supported: memroute speaks memcached only".into());
        }
        "preconnect" | "backlog" | "client_connections" | "tcpkeepalive" => {
            let why = match key {
                "preconnect" => "memroute connects on first use and keeps connections open",
                "backlog" => "memroute uses the system's listen backlog",
                "client_connections" => "the limit is [listen] max_connections",
                _ => "not configurable in memroute",
            };
            pool.ignored
                .push(format!("{key}: {} ignored ({why})", scalar(value)));
        }
        _ => return Err("unknown twemproxy setting".into()),
    }
    Ok(())
}

fn render(name: &str, listen: &str, pool: &Pool, others: &[&str]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Imported from twemproxy pool `{name}` by `memroute import-nutcracker`."
    );
    let _ = writeln!(
        w,
        "# Servers keep twemproxy's \"host:port:weight [name]\" form: same ring, same key placement."
    );
    if !others.is_empty() {
        let _ = writeln!(
            w,
            "# The file's other pools ({}) listen on their own ports: import each with --pool NAME\n\
             # and run it as its own memroute.",
            others.join(", ")
        );
    }
    let _ = writeln!(w, "\n[listen]\naddress = {}", quote(listen));
    // twemproxy's stats port is a command-line flag, so there is nothing to import; offer ours.
    let _ = writeln!(
        w,
        "\n# Prometheus metrics (twemproxy's stats port was a command-line flag):"
    );
    let _ = writeln!(w, "# [admin]\n# address = \"127.0.0.1:9100\"");
    // twemproxy takes any YAML key as a pool name; ours label metrics, so they are restricted.
    // The name plays no part in placement (the ring uses server names).
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
    let _ = writeln!(
        w,
        "\n[[routes]]\nprefix = \"\"\ntiers = [{}]",
        quote(&pool_name)
    );
    out
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
