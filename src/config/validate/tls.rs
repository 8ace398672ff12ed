//! `[listen] tls` and `[pools.NAME] tls` (issue 18): the keys, and the files they name.
//!
//! The certificate files are read and checked here, as part of validation, so that a missing
//! file, a file with no certificate, or a key that does not belong to its certificate is a
//! config error at the key that names the file: `memroute --check-config` catches it, start-up
//! refuses it, and a reload keeps the running config (and its certificates). Relative paths are
//! relative to the config file's directory, so a config and its certificates can move together.

use std::path::{Path, PathBuf};

use super::Ctx;
use super::fields::Fields;
use crate::config::ServerConfig;
use crate::config::raw::{Entry, Node, Table, Value};
use crate::tls::{self, BackendTls, DEFAULT_HANDSHAKE_TIMEOUT, ListenTls, TlsError};

const LISTEN_TLS_KEYS: &[&str] = &["cert", "key", "client_ca", "handshake_timeout"];
const BACKEND_TLS_KEYS: &[&str] = &["ca", "server_name", "cert", "key"];

/// The table a `tls` key holds, or an error naming what it holds instead; `shape` (with its
/// punctuation) shows what a good one looks like.
fn table<'e>(ctx: &mut Ctx<'_>, entry: &'e Entry, shape: &str) -> Option<&'e Table> {
    let Value::Table(t) = &entry.node.value else {
        let found = entry.node.value.type_name();
        let message = format!("`tls` must be a table{shape} found {found}");
        ctx.error(&entry.node.span, message);
        return None;
    };
    Some(t)
}

/// `[listen] tls = { cert, key, client_ca, handshake_timeout }`.
pub(super) fn listen(ctx: &mut Ctx<'_>, entry: Option<&Entry>) -> Option<ListenTls> {
    listener(ctx, entry, "[listen] tls")
}

/// A listener's `tls` table; `section` names it in messages.
pub(super) fn listener(
    ctx: &mut Ctx<'_>,
    entry: Option<&Entry>,
    section: &str,
) -> Option<ListenTls> {
    let entry = entry?;
    let t = table(ctx, entry, " { cert = \"...\", key = \"...\" },")?;
    let f = Fields::new(ctx, t, section, LISTEN_TLS_KEYS, &[]);
    let cert = path(ctx, &f, "cert");
    let key = path(ctx, &f, "key");
    for (name, value) in [("cert", &cert), ("key", &key)] {
        if value.is_none() && f.entry(name).is_none() {
            ctx.error(
                &entry.node.span,
                format!("{section} needs `{name}` (a PEM file)"),
            );
        }
    }
    let client_ca = path(ctx, &f, "client_ca");
    let handshake_timeout = f.duration(ctx, "handshake_timeout").and_then(|d| {
        if d.is_zero() {
            let span = &f.entry("handshake_timeout")?.node.span;
            ctx.error(span, "`handshake_timeout` must be more than 0");
            return None;
        }
        Some(d)
    });
    let ((cert, cert_node), (key, key_node)) = (cert?, key?);
    let tls = ListenTls {
        cert,
        key,
        client_ca: client_ca.as_ref().map(|(p, _)| p.clone()),
        handshake_timeout: handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
    };
    if let Err(e) = tls::build::server_config(&tls) {
        let files = [
            Some((&tls.cert, cert_node)),
            Some((&tls.key, key_node)),
            client_ca.as_ref().map(|(p, n)| (p, *n)),
        ];
        file_error(ctx, "tls", &entry.node, &files, &e);
        return None;
    }
    Some(tls)
}

/// `[pools.NAME] tls = { ca, server_name, cert, key }`; `servers` are checked for a usable SNI
/// name when `server_name` is not set.
pub(super) fn backend(
    ctx: &mut Ctx<'_>,
    pool: &str,
    entry: Option<&Entry>,
    servers: &[ServerConfig],
) -> Option<BackendTls> {
    let entry = entry?;
    let t = table(
        ctx,
        entry,
        ", e.g. { ca = \"ca.pem\" } or {} for the system's CAs;",
    )?;
    let section = format!("[pools.{pool}] tls");
    let f = Fields::new(ctx, t, &section, BACKEND_TLS_KEYS, &[]);
    let ca = path(ctx, &f, "ca");
    let cert = path(ctx, &f, "cert");
    let key = path(ctx, &f, "key");
    let server_name = f.string(ctx, "server_name");
    if cert.is_some() != key.is_some() {
        let (given, missing) = if cert.is_some() {
            ("cert", "key")
        } else {
            ("key", "cert")
        };
        if let Some(e) = f.entry(given) {
            ctx.error(
                &e.key_span,
                format!("`{given}` needs `{missing}` too (a client certificate and its key)"),
            );
        }
        return None;
    }
    let tls = BackendTls {
        ca: ca.as_ref().map(|(p, _)| p.clone()),
        server_name: server_name.map(|(s, _)| s.to_string()),
        cert: cert.as_ref().map(|(p, _)| p.clone()),
        key: key.as_ref().map(|(p, _)| p.clone()),
    };
    let mut ok = true;
    match server_name {
        Some((_, node)) => {
            if let Err(e) = tls::build::server_name(&tls, "") {
                ctx.error(&node.span, format!("`server_name`: {e}"));
                ok = false;
            }
        }
        None => {
            for s in servers {
                if let Err(e) = tls::build::server_name(&tls, &s.address) {
                    ctx.error(
                        &entry.node.span,
                        format!("server `{}`: {e}; set `server_name` in `tls`", s.address),
                    );
                    ok = false;
                }
            }
        }
    }
    if let Err(e) = tls::build::client_config(&tls) {
        let files = [
            ca.as_ref().map(|(p, n)| (p, *n)),
            cert.as_ref().map(|(p, n)| (p, *n)),
            key.as_ref().map(|(p, n)| (p, *n)),
        ];
        file_error(ctx, "tls", &entry.node, &files, &e);
        ok = false;
    }
    ok.then_some(tls)
}

/// A path-valued key, resolved against the config file's directory.
fn path<'t>(ctx: &mut Ctx<'_>, f: &Fields<'t>, key: &str) -> Option<(PathBuf, &'t Node)> {
    let (text, node) = f.string(ctx, key)?;
    if text.is_empty() {
        ctx.error(
            &node.span,
            format!("`{key}` is empty; give the path of a PEM file"),
        );
        return None;
    }
    let base = Path::new(ctx.file).parent().unwrap_or(Path::new(""));
    Some((base.join(text), node))
}

/// Reports `e` at the value of the key that names the file it is about, else at the table.
fn file_error(
    ctx: &mut Ctx<'_>,
    what: &str,
    table: &Node,
    files: &[Option<(&PathBuf, &Node)>],
    e: &TlsError,
) {
    let at = e
        .path()
        .and_then(|p| files.iter().flatten().find(|(f, _)| f.as_path() == p))
        .map_or(&table.span, |(_, node)| &node.span);
    ctx.error(at, format!("`{what}`: {e}"));
}

#[cfg(test)]
mod tests;
