//! Server addresses and twemproxy's server entries (`host:port[:weight [name]]`), shared by the
//! `[listen]`/`[admin]` fields, the `[pools]` tables and the nutcracker importer. A leaf: it
//! knows nothing of the TOML tree.

use std::net::Ipv6Addr;

use crate::config::ServerConfig;

/// `modula` gives a server one slot per unit of weight, so a huge weight would be a huge table.
pub(super) const MAX_WEIGHT: u64 = 10_000;
/// memcached's default port: twemproxy leaves it out of the ring name.
const MEMCACHED_PORT: u16 = 11211;

/// Parses twemproxy's string form: `host:port`, `host:port:weight` or `host:port:weight name`.
pub fn parse_server_entry(entry: &str) -> Result<ServerConfig, String> {
    let entry = entry.trim();
    let (addr, name) = match entry.split_once(char::is_whitespace) {
        Some((addr, name)) => (addr, Some(check_name(name.trim())?)),
        None => (entry, None),
    };
    // The weight is a third `:` field; look for colons only after an IPv6 `[...]`.
    let after_host = if addr.starts_with('[') {
        addr.find(']').map_or(0, |i| i + 1)
    } else {
        0
    };
    let colons: Vec<usize> = addr[after_host..]
        .match_indices(':')
        .map(|(i, _)| i + after_host)
        .collect();
    let (address, weight) = match colons.as_slice() {
        &[_, second] => (&addr[..second], Some(&addr[second + 1..])),
        _ => (addr, None),
    };
    let (host, port) = parse_address(address, false)?;
    let weight = match weight {
        None => 1,
        Some(text) => match text.parse::<u64>() {
            Ok(w) if text.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_WEIGHT).contains(&w) => {
                w as u32
            }
            _ => {
                return Err(format!(
                    "bad server {entry:?}: weight must be a number from 1 to {MAX_WEIGHT}, found {text:?}"
                ));
            }
        },
    };
    Ok(server(host, port, weight, name))
}

/// Splits `host:port`; a host is a name, an IPv4 address or a bracketed IPv6 address. Port 0
/// (any free port) is only allowed for addresses we listen on.
pub fn parse_address(address: &str, listen: bool) -> Result<(&str, u16), String> {
    let expected = "expected host:port, e.g. \"127.0.0.1:11211\"";
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("bad address {address:?}: missing `]`"))?;
        if rest[..end].parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "bad address {address:?}: {:?} is not an IPv6 address",
                &rest[..end]
            ));
        }
        let port = rest[end + 1..].strip_prefix(':');
        (
            &address[..end + 2],
            port.ok_or_else(|| format!("bad address {address:?}: {expected}"))?,
        )
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("bad address {address:?}: {expected}"))?;
        if host.contains(':') {
            return Err(format!(
                "bad address {address:?}: write an IPv6 host in brackets, e.g. \"[::1]:11211\""
            ));
        }
        let name_chars = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        if host.is_empty() || !host.chars().all(name_chars) {
            return Err(format!(
                "bad address {address:?}: {host:?} is not a host name or IP address"
            ));
        }
        (host, port)
    };
    let min = if listen { 0 } else { 1 };
    match port.parse::<u16>() {
        Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) && p >= min => Ok((host, p)),
        _ => Err(format!(
            "bad address {address:?}: port {port:?} is not a number from {min} to 65535"
        )),
    }
}

/// Names label metrics and appear in logs, so no spaces.
pub(super) fn check_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!(
            "server name {name:?} must be non-empty and without spaces"
        ));
    }
    Ok(name.to_string())
}

/// twemproxy's ring name rule (DESIGN §2, step 1).
pub(super) fn server(host: &str, port: u16, weight: u32, name: Option<String>) -> ServerConfig {
    let address = format!("{host}:{port}");
    let named = name.is_some();
    let name = name.unwrap_or_else(|| {
        if port == MEMCACHED_PORT {
            host.to_string()
        } else {
            address.clone()
        }
    });
    ServerConfig {
        address,
        weight,
        name,
        named,
    }
}
