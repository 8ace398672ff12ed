//! Stage two of loading: the raw tree ([`super::raw`]) → a validated [`Config`].
//!
//! Validation never stops at the first problem: each check records an error with its position
//! and carries on with a default, so the operator fixes the whole file in one go (DESIGN §5).
//! Tables are read through [`fields::Fields`], which reports unknown keys with a hint; pools are
//! in [`pools`], addresses and twemproxy's server entries in [`address`] (a leaf both `fields`
//! and `pools` use), routes in [`routes`].

mod address;
mod fields;
mod listeners;
mod pools;
mod replication;
mod routes;
mod tls;

use std::fmt;

use super::raw::{self, Span, Table};
use super::{
    AdminConfig, Config, DEFAULT_ADMIN, DEFAULT_LISTEN, DEFAULT_MAX_CLIENT_OUTPUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT, DEFAULT_MAX_LINE_SIZE, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_UNIX_MODE, ListenAddress, ListenConfig, ListenerConfig,
};
use fields::Fields;

pub use address::{parse_address, parse_server_entry};
pub use listeners::parse_listen_address;

/// One configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// What is wrong, with a hint where one helps.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A single error without a position (e.g. the file cannot be read).
    pub fn single(file: String, message: String) -> Self {
        ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            column: 0,
            message,
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates `text`; `file` names it in error messages.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx {
        file,
        text,
        errors: Vec::new(),
    };
    let root = match raw::parse(text) {
        Ok(root) => root,
        Err(e) => {
            match e.span {
                Some(span) => ctx.error(&span, e.message),
                None => ctx.global(e.message),
            }
            return Err(ctx.into_errors());
        }
    };
    let config = config(&mut ctx, &root);
    if ctx.errors.is_empty() {
        Ok(config)
    } else {
        Err(ctx.into_errors())
    }
}

/// Collects errors while the tree is walked.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offset (None = no position) and message.
    errors: Vec<(Option<usize>, String)>,
}

impl Ctx<'_> {
    /// Records a problem at `span`.
    fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.errors.push((Some(span.start), message.into()));
    }

    /// Records a problem of the file as a whole.
    fn global(&mut self, message: impl Into<String>) {
        self.errors.push((None, message.into()));
    }

    /// The 1-based line of `span`, for "first defined at line N" hints.
    fn line(&self, span: &Span) -> usize {
        raw::position(self.text, span.start).0
    }

    /// Errors in file order; those without a position last.
    fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors;
        // Stable: two errors at one spot keep the order they were found in.
        errors.sort_by_key(|(offset, _)| offset.unwrap_or(usize::MAX));
        ConfigErrors(
            errors
                .into_iter()
                .map(|(offset, message)| {
                    let (line, column) = offset.map_or((0, 0), |o| raw::position(self.text, o));
                    ConfigError {
                        file: self.file.to_string(),
                        line,
                        column,
                        message,
                    }
                })
                .collect(),
        )
    }
}

const TOP_KEYS: &[&str] = &["listen", "listeners", "admin", "pools", "routes"];
const LISTEN_KEYS: &[&str] = &[
    "address",
    "max_connections",
    "allow_flush_all",
    "max_value_size",
    "max_line_size",
    "max_inflight",
    "tls",
    "max_client_output",
];
/// Below a few kilobytes even small pipelined replies would go out one at a time.
const MIN_CLIENT_OUTPUT: u64 = 4096;
/// A request line must hold a 250-byte key plus the command and every numeric field.
const MIN_LINE_SIZE: u64 = 1024;

fn config(ctx: &mut Ctx<'_>, root: &Table) -> Config {
    let top = Fields::new(ctx, root, "the top level", TOP_KEYS, &[]);
    let listen = match top.table(ctx, "listen") {
        Some(t) => listen(ctx, t),
        None => listen(ctx, &Table::default()),
    };
    let admin = top.table(ctx, "admin").map(|t| {
        let f = Fields::new(ctx, t, "[admin]", &["address"], &[]);
        let address = f
            .address(ctx, "address")
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        AdminConfig { address }
    });
    // Port 0 asks for any free port (tests do that), so two of them do not clash.
    if let (Some(admin), Some(entry)) = (&admin, root.get("admin")) {
        if admin.address == listen.address && !admin.address.ends_with(":0") {
            ctx.error(
                &entry.node.span,
                "[admin] address is the same as [listen] address",
            );
        }
    }
    let pools = pools::pools(ctx, top.entry("pools"));
    let routes = routes::routes(ctx, top.entry("routes"), &pools);
    replication::gutters(ctx, top.entry("pools"), &pools, &routes);
    // `[listen] address` is the first listener; without it and with `[[listeners]]`, only
    // those listen (the default address is not bound behind the operator's back).
    let listen_address = root
        .get("listen")
        .and_then(|e| match &e.node.value {
            raw::Value::Table(t) => t.get("address"),
            _ => None,
        })
        .map(|e| e.node.span.clone());
    let extra = top.entry("listeners");
    let first = ListenerConfig {
        address: ListenAddress::Tcp(listen.address.clone()),
        mode: DEFAULT_UNIX_MODE,
        max_connections: listen.max_connections,
        pool: None,
        tls: listen.tls.clone(),
    };
    let first_span = listen_address.clone().unwrap_or(0..0);
    let mut all = Vec::new();
    if listen_address.is_some() || extra.is_none() {
        all.push(first.clone());
    }
    let first_ref =
        (listen_address.is_some() || extra.is_none()).then_some((&first.address, &first_span));
    all.extend(listeners::listeners(
        ctx,
        extra,
        first_ref,
        (listen.max_connections, listen.tls.as_ref()),
        &pools,
    ));
    if all.is_empty() {
        if let Some(e) = extra {
            ctx.error(&e.node.span, "[[listeners]] has no valid listener");
        }
        all.push(first);
    }
    let mut listen = listen;
    // Code that wants one address (stats settings, logs) sees the first listener's.
    if let ListenAddress::Tcp(a) = &all[0].address {
        listen.address = a.clone();
    } else {
        listen.address = all[0].address.to_string();
    }
    Config {
        listen,
        listeners: all,
        admin,
        pools,
        routes,
    }
}

fn listen(ctx: &mut Ctx<'_>, t: &Table) -> ListenConfig {
    let f = Fields::new(ctx, t, "[listen]", LISTEN_KEYS, &[]);
    let size = |ctx: &mut Ctx<'_>, key, min, default: usize| {
        f.integer(ctx, key, min, u32::MAX.into())
            .map_or(default, |n| n as usize)
    };
    ListenConfig {
        address: f
            .address(ctx, "address")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        max_connections: size(ctx, "max_connections", 1, DEFAULT_MAX_CONNECTIONS),
        allow_flush_all: f.boolean(ctx, "allow_flush_all").unwrap_or(false),
        max_value_size: size(ctx, "max_value_size", 1, DEFAULT_MAX_VALUE_SIZE),
        max_line_size: size(ctx, "max_line_size", MIN_LINE_SIZE, DEFAULT_MAX_LINE_SIZE),
        max_inflight: size(ctx, "max_inflight", 1, DEFAULT_MAX_INFLIGHT),
        tls: tls::listen(ctx, f.entry("tls")),
        max_client_output: size(
            ctx,
            "max_client_output",
            MIN_CLIENT_OUTPUT,
            DEFAULT_MAX_CLIENT_OUTPUT,
        ),
    }
}

#[cfg(test)]
mod tests;
