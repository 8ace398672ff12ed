//! Typed access to the keys of one table, with unknown keys reported up front.
//!
//! This is the error-collecting stand-in for `#[serde(deny_unknown_fields)]`: every getter
//! records a located error and returns `None` on a wrong type or range, so the caller falls back
//! to the default and validation goes on.

use std::time::Duration;

use super::Ctx;
use super::address::parse_address;
use crate::config::raw::{Entry, Node, Table, Value};

/// The keys of one table.
pub(super) struct Fields<'t> {
    table: &'t Table,
}

impl<'t> Fields<'t> {
    /// Reports every key of `table` that is not in `known`, with a "did you mean" hint drawn from
    /// `known` or, for keys of other tools, from `aliases` (`(their key, our key)`).
    pub(super) fn new(
        ctx: &mut Ctx<'_>,
        table: &'t Table,
        section: &str,
        known: &[&str],
        aliases: &[(&str, &str)],
    ) -> Self {
        for e in &table.entries {
            if known.contains(&e.key.as_str()) {
                continue;
            }
            let hint = aliases
                .iter()
                .find(|(theirs, _)| *theirs == e.key)
                .map(|(_, ours)| *ours)
                .or_else(|| suggest(&e.key, known));
            let message = match hint {
                Some(h) => format!("unknown key `{}` in {section}; did you mean `{h}`?", e.key),
                None => format!(
                    "unknown key `{}` in {section} (expected one of: {})",
                    e.key,
                    known.join(", ")
                ),
            };
            ctx.error(&e.key_span, message);
        }
        Fields { table }
    }

    /// The entry for `key`.
    pub(super) fn entry(&self, key: &str) -> Option<&'t Entry> {
        self.table.get(key)
    }

    /// A string value.
    pub(super) fn string(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<(&'t str, &'t Node)> {
        let e = self.entry(key)?;
        string(ctx, &e.node, key).map(|s| (s, &e.node))
    }

    /// An integer in `min..=max`.
    pub(super) fn integer(&self, ctx: &mut Ctx<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let e = self.entry(key)?;
        match e.node.value {
            Value::Integer(n) if i128::from(n) < i128::from(min) => {
                ctx.error(
                    &e.node.span,
                    format!("`{key}` must be at least {min}, found {n}"),
                );
                None
            }
            Value::Integer(n) if i128::from(n) > i128::from(max) => {
                ctx.error(
                    &e.node.span,
                    format!("`{key}` must be at most {max}, found {n}"),
                );
                None
            }
            // In range, so not negative.
            Value::Integer(n) => Some(n.unsigned_abs()),
            ref other => {
                type_error(ctx, &e.node, key, "an integer", other);
                None
            }
        }
    }

    /// A boolean.
    pub(super) fn boolean(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<bool> {
        let e = self.entry(key)?;
        match e.node.value {
            Value::Boolean(b) => Some(b),
            ref other => {
                type_error(ctx, &e.node, key, "a boolean (true or false)", other);
                None
            }
        }
    }

    /// A duration written as humantime text: `"1s"`, `"500ms"`, `"1m 30s"`.
    pub(super) fn duration(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Duration> {
        let (text, node) = self.string(ctx, key)?;
        match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(
                    &node.span,
                    format!("`{key}`: bad duration {text:?} ({e}); write e.g. \"1s\" or \"500ms\""),
                );
                None
            }
        }
    }

    /// A memcached TTL as a duration: whole seconds (memcached's unit), at least 1s (0 would
    /// mean "never expires").
    pub(super) fn ttl(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<Duration> {
        let ttl = self.duration(ctx, key)?;
        if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
            let span = &self.entry(key)?.node.span;
            let msg = format!("`{key}` must be a whole number of seconds, at least 1s");
            ctx.error(span, msg);
            return None;
        }
        Some(ttl)
    }

    /// A `host:port` listen address.
    pub(super) fn address(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<String> {
        let (text, node) = self.string(ctx, key)?;
        match parse_address(text, true) {
            Ok(_) => Some(text.to_string()),
            Err(e) => {
                ctx.error(&node.span, format!("`{key}`: {e}"));
                None
            }
        }
    }

    /// A table.
    pub(super) fn table(&self, ctx: &mut Ctx<'_>, key: &str) -> Option<&'t Table> {
        let e = self.entry(key)?;
        match &e.node.value {
            Value::Table(t) => Some(t),
            other => {
                type_error(ctx, &e.node, key, "a table", other);
                None
            }
        }
    }
}

/// `node` as a string, or a located type error naming `what`.
pub(super) fn string<'t>(ctx: &mut Ctx<'_>, node: &'t Node, what: &str) -> Option<&'t str> {
    match &node.value {
        Value::String(s) => Some(s),
        other => {
            type_error(ctx, node, what, "a string", other);
            None
        }
    }
}

/// `node` as an array, or a located type error naming `what`.
pub(super) fn array<'t>(ctx: &mut Ctx<'_>, node: &'t Node, what: &str) -> Option<&'t [Node]> {
    match &node.value {
        Value::Array(a) => Some(a),
        other => {
            type_error(ctx, node, what, "an array", other);
            None
        }
    }
}

fn type_error(ctx: &mut Ctx<'_>, node: &Node, what: &str, expected: &str, found: &Value) {
    ctx.error(
        &node.span,
        format!("`{what}` must be {expected}, found {}", found.type_name()),
    );
}

/// The closest of `candidates` to a misspelt `word`, if it is close enough to be a typo.
pub(super) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        // One edit in three characters is still recognisably the same word; replacing all of a
        // one-letter name is not a typo.
        .filter(|&(d, c)| d <= (c.chars().count() / 3).max(1) && d < c.chars().count())
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent swaps (`weigth` → `weight` is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["address", "max_connections", "weight", "tiers"];
        assert_eq!(suggest("adress", &keys), Some("address"));
        assert_eq!(suggest("weigth", &keys), Some("weight"));
        assert_eq!(suggest("max_conections", &keys), Some("max_connections"));
        assert_eq!(suggest("tier", &keys), Some("tiers"));
        assert_eq!(suggest("colour", &keys), None);
        assert_eq!(suggest("b", &["a"]), None);
    }
}
