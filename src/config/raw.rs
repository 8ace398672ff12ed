//! Stage one of loading: TOML text → a small tree that keeps the position of every key and value.
//!
//! serde's derived `Deserialize` stops at the first problem and forgets where keys were, but the
//! operator wants **every** mistake with its line and column (DESIGN §5). So the document is read
//! with `toml_edit` (the parser inside `toml`), copied into [`Table`]/[`Node`], and
//! [`super::validate`] walks that tree, collecting errors as it goes.

use std::ops::Range;

/// Byte offsets into the config text.
pub type Span = Range<usize>;

/// A value and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value is (for a table: its header, or its key when the table is implicit).
    pub span: Span,
    /// The value.
    pub value: Value,
}

/// A TOML value; tables keep their entries in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// A date or time, kept as written (no memroute key takes one).
    Datetime(String),
    /// An array (also an array of tables, `[[routes]]`).
    Array(Vec<Node>),
    /// A table (standard, inline or implicit).
    Table(Table),
}

impl Value {
    /// The TOML type name, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// The entries of one table, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Key/value pairs.
    pub entries: Vec<Entry>,
}

impl Table {
    /// The entry for `key`, if present (TOML forbids duplicate keys, so there is at most one).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// One `key = value` (or `[key]` header) of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written, unquoted.
    pub key: String,
    /// Where the key is.
    pub key_span: Span,
    /// The value.
    pub node: Node,
}

/// The one error a TOML syntax problem gives: parsing cannot go on past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped, when it says.
    pub span: Option<Span>,
    /// The parser's message, on one line.
    pub message: String,
}

/// Parses `text` into the root table.
pub fn parse(text: &str) -> Result<Table, SyntaxError> {
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| SyntaxError {
        span: e.span(),
        // toml_edit's messages may span lines ("expected ..., found ..."); keep the
        // one-error-per-line output format.
        message: format!(
            "TOML syntax error: {}",
            e.message().trim().replace('\n', "; ")
        ),
    })?;
    Ok(table(doc.as_table()))
}

/// 1-based (line, column) of byte `offset`; the column counts characters, as editors do.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // A span never splits a character, but be safe with a bad offset: step back to a boundary.
    let offset = (0..=offset)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn table(t: &toml_edit::Table) -> Table {
    let entries = t
        .iter()
        .filter_map(|(name, item)| {
            // `key()` is always present for a key `iter()` yielded.
            let key_span = t.key(name).and_then(|k| k.span()).unwrap_or(0..0);
            let node = item_node(item, &key_span)?;
            Some(Entry {
                key: name.to_string(),
                key_span,
                node,
            })
        })
        .collect();
    Table { entries }
}

fn inline_table(t: &toml_edit::InlineTable) -> Table {
    let entries = t
        .iter()
        .map(|(name, value)| {
            let key_span = t.key(name).and_then(|k| k.span()).unwrap_or(0..0);
            let node = value_node(value, &key_span);
            Entry {
                key: name.to_string(),
                key_span,
                node,
            }
        })
        .collect();
    Table { entries }
}

/// `fallback` is the key's span: implicit tables (`pools` in `[pools.a]`) have none of their own.
fn item_node(item: &toml_edit::Item, fallback: &Span) -> Option<Node> {
    let span = item.span().unwrap_or_else(|| fallback.clone());
    let value = match item {
        toml_edit::Item::None => return None,
        toml_edit::Item::Value(v) => return Some(value_node(v, fallback)),
        toml_edit::Item::Table(t) => Value::Table(table(t)),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .map(|t| Node {
                    span: t.span().unwrap_or_else(|| span.clone()),
                    value: Value::Table(table(t)),
                })
                .collect(),
        ),
    };
    Some(Node { span, value })
}

fn value_node(v: &toml_edit::Value, fallback: &Span) -> Node {
    use toml_edit::Value as V;
    let span = v.span().unwrap_or_else(|| fallback.clone());
    let value = match v {
        V::String(s) => Value::String(s.value().clone()),
        V::Integer(i) => Value::Integer(*i.value()),
        V::Float(f) => Value::Float(*f.value()),
        V::Boolean(b) => Value::Boolean(*b.value()),
        V::Datetime(d) => Value::Datetime(d.value().to_string()),
        V::Array(a) => Value::Array(a.iter().map(|x| value_node(x, &span)).collect()),
        V::InlineTable(t) => Value::Table(inline_table(t)),
    };
    Node { span, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_keys_values_and_implicit_tables() {
        let text = "[pools.a]\nservers = [\"h:1\", { address = \"h:2\" }]\n\n[[routes]]\ntiers = [\"a\"]\n";
        let root = parse(text).unwrap();
        let pools = root.get("pools").unwrap();
        // `pools` is implicit: its position is its key inside `[pools.a]`.
        assert_eq!(position(text, pools.node.span.start), (1, 2));
        let Value::Table(pools) = &pools.node.value else {
            panic!()
        };
        let a = pools.get("a").unwrap();
        assert_eq!(position(text, a.node.span.start), (1, 1));
        let Value::Table(a) = &a.node.value else {
            panic!()
        };
        let servers = a.get("servers").unwrap();
        assert_eq!(position(text, servers.key_span.start), (2, 1));
        let Value::Array(list) = &servers.node.value else {
            panic!()
        };
        assert_eq!(position(text, list[1].span.start), (2, 19));
        let routes = root.get("routes").unwrap();
        let Value::Array(routes) = &routes.node.value else {
            panic!()
        };
        assert_eq!(position(text, routes[0].span.start), (4, 1));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let text = "[listen]\naddress = \"x\nmax_connections = 1\n";
        let err = parse(text).unwrap_err();
        let span = err.span.unwrap();
        assert_eq!(position(text, span.start).0, 2);
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "# é\nkey = \"ü\" x";
        // `ü` is two bytes but one column.
        assert_eq!(position(text, text.find('x').unwrap()), (2, 11));
    }
}
