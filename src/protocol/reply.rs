//! memcached's exact reply lines, and the proxy's own `SERVER_ERROR` reasons.

/// Unknown command, empty line, wrong token count.
pub const ERROR: &[u8] = b"ERROR\r\n";
/// Malformed arguments.
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
/// Bad `delete` arguments.
pub const BAD_DELETE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
/// Non-numeric exptime in `touch`, `gat`, `flush_all`.
pub const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
/// Non-numeric delta in `incr`/`decr`.
pub const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
/// Data block not terminated by `\r\n`.
pub const BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
/// A line longer than `max_line_size` without `\r\n`; the connection is closed after it.
pub const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
/// Value larger than `max_value_size`.
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
/// `flush_all` while `[listen] allow_flush_all` is false.
pub const FLUSH_DISABLED: &[u8] = b"SERVER_ERROR flush_all disabled\r\n";
/// Sent to a connection over `max_connections` before it is closed.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"SERVER_ERROR too many open connections\r\n";
/// A key with no matching route (only possible without a default route).
pub const NO_ROUTE: &[u8] = b"SERVER_ERROR no route for key\r\n";
/// The outcome depends on a lower tier that cannot be asked (DESIGN §4): "could not be done",
/// never a `NOT_FOUND` for a key that may exist.
pub const LOWER_TIER_UNREACHABLE: &[u8] = b"SERVER_ERROR lower tier unreachable\r\n";
/// Reply to `verbosity` and a successful `flush_all`.
pub const OK: &[u8] = b"OK\r\n";
/// End of a retrieval answer.
pub const END: &[u8] = b"END\r\n";
/// `stats reset`.
pub const RESET: &[u8] = b"RESET\r\n";
/// Storage reply.
pub const STORED: &[u8] = b"STORED\r\n";
/// Storage reply when the condition failed.
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
/// `cas` on a changed item.
pub const EXISTS: &[u8] = b"EXISTS\r\n";
/// Key absent.
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
/// `delete` hit.
pub const DELETED: &[u8] = b"DELETED\r\n";
/// `touch` hit.
pub const TOUCHED: &[u8] = b"TOUCHED\r\n";

/// `mn`.
pub const META_NOOP: &[u8] = b"MN\r\n";
/// `mg` with more than 17 flags.
pub const META_FLAGS_ARE_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags are too long\r\n";
/// `ms`, `md`, `ma` with more than 17 flags (`ms`: 16).
pub const META_FLAGS_TOO_LONG: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
/// A repeated meta flag (or a flag byte above 126).
pub const META_DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
/// An unknown meta flag (`mg`, `ms`).
pub const META_INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
/// Any flag error of `md` and `ma`.
pub const META_BAD_FLAG: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
/// A `b` key that is not base64 (`mg`, `ms`).
pub const META_BAD_KEY_DECODE: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
/// A bad number in `N`, `T`, `R`, `C` (`mg`, `ms`).
pub const META_BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
/// `M` with other than one character.
pub const META_BAD_M_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";
/// A bad `J` number.
pub const META_BAD_INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
/// A bad `D` number.
pub const META_BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
/// An `O` token over 32 bytes.
pub const META_OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
/// `ms` with an unknown `M` mode.
pub const META_BAD_MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
/// `ma` with an unknown `M` mode.
pub const META_BAD_MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";

/// What the session writes back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing (`noreply`).
    None,
    /// A fixed line.
    Static(&'static [u8]),
    /// A line from a backend (or built by the proxy), with its `\r\n`.
    Line(bytes::Bytes),
    /// `VALUE` blocks followed by `END`.
    Values(Vec<bytes::Bytes>),
}

impl Reply {
    /// True for `SERVER_ERROR …`: a backend failed, counted as a server-side error.
    pub fn is_server_error(&self) -> bool {
        match self {
            Reply::Static(l) => l.starts_with(b"SERVER_ERROR"),
            Reply::Line(l) => l.starts_with(b"SERVER_ERROR"),
            _ => false,
        }
    }

    /// True for `CLIENT_ERROR …` and `ERROR`.
    pub fn is_client_error(&self) -> bool {
        match self {
            Reply::Static(l) => l.starts_with(b"CLIENT_ERROR") || l.starts_with(b"ERROR"),
            Reply::Line(l) => l.starts_with(b"CLIENT_ERROR") || l.starts_with(b"ERROR"),
            _ => false,
        }
    }
}
