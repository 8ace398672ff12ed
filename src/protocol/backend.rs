//! Parses backend answers. A backend connection is a FIFO, so the parser is told what the oldest
//! outstanding request expects ([`ReplyKind`], and for a retrieval the keys asked) and takes
//! exactly one answer off the front of the buffer. Values come back as `Bytes` slices of the
//! connection's read buffer.
//!
//! The backend is not trusted (DESIGN §3): a length is checked against `max_value_size` before
//! anything waits for the bytes it announces, a line may not grow past [`LINE_MAX`], and a
//! `VALUE` block must carry a key the request asked for, in memcached's order ([`KeyOrder`]).
//! Anything else is a [`ProtocolError`]: the stream is out of step and nothing more read from it
//! may reach a client. The parser never panics, whatever the bytes (property tests in
//! `backend/tests.rs`).

pub mod meta;

use bytes::{Bytes, BytesMut};

use super::command::ReplyKind;

/// Longest answer line accepted, `\r\n` included. memcached's longest is a `VALUE` line: a
/// 250-byte key and three numbers; its error lines are short.
pub const LINE_MAX: usize = 1024;

/// One `VALUE` block of a retrieval answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Position of its key in the request's keys (see [`KeyOrder`]).
    pub asked: usize,
    /// Client flags.
    pub flags: u32,
    /// CAS token (`gets`/`gats`).
    pub cas: Option<u64>,
    /// The whole block (`VALUE …\r\n<data>\r\n`), forwarded to clients as is.
    pub block: Bytes,
    /// Where the key ends in `block` (it starts after `VALUE `) and where the data starts. The
    /// key and the data are cut from the block only when asked for: most answers are only
    /// forwarded, and each `Bytes` slice costs two atomic operations on the read buffer. Both
    /// lie within the `VALUE` line, at most [`LINE_MAX`] bytes: `u16`, so that a `Value` is
    /// 64 bytes and a list of them turns into the reply's list of blocks in place.
    key_end: u16,
    data_start: u16,
}

const _: () = assert!(LINE_MAX <= u16::MAX as usize);

impl Value {
    /// A block `VALUE <key> …\r\n<data>\r\n` whose key is `key_len` bytes and whose data is
    /// `data_len` bytes.
    pub fn new(
        block: Bytes,
        key_len: usize,
        data_len: usize,
        asked: usize,
        flags: u32,
        cas: Option<u64>,
    ) -> Value {
        // Out of range only for a block no parser made (a line over LINE_MAX): its key and
        // data then read as empty.
        let offset = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
        Value {
            asked,
            flags,
            cas,
            key_end: offset(VALUE_PREFIX.len() + key_len),
            data_start: offset(block.len().saturating_sub(data_len + 2)),
            block,
        }
    }

    /// The key as the backend echoed it.
    pub fn key(&self) -> &[u8] {
        self.block
            .get(VALUE_PREFIX.len()..usize::from(self.key_end))
            .unwrap_or_default()
    }

    /// The value, without `\r\n`.
    pub fn data(&self) -> Bytes {
        let (start, end) = (
            usize::from(self.data_start),
            self.block.len().saturating_sub(2),
        );
        match start <= end {
            true => self.block.slice(start..end),
            false => Bytes::new(),
        }
    }
}

/// How a `VALUE` line starts.
const VALUE_PREFIX: &[u8] = b"VALUE ";

/// One complete backend answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A single line including its `\r\n` (`STORED`, `NOT_FOUND`, a number, `SERVER_ERROR …`);
    /// for a client's meta command, its whole answer (a `VA` data block included).
    Line(Bytes),
    /// A retrieval answer: the hits in the order of the keys asked; `END` was seen.
    Values(Vec<Value>),
    /// A meta-get hit: `VA <len> <flags>…` with the value.
    Meta {
        /// Client flags (`f` return flag).
        flags: u32,
        /// Remaining TTL in seconds, `-1` for no expiry (`t` return flag).
        ttl: i64,
        /// The value, without `\r\n`.
        data: Bytes,
    },
}

/// The backend sent something that is not a memcached answer to what was asked: the connection
/// cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected backend answer: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn line(what: &str, line: &[u8]) -> ProtocolError {
        let shown = &line[..line.len().min(80)];
        ProtocolError(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
    }
}

/// What the request at the front of the FIFO expects.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The answer's shape.
    pub kind: ReplyKind,
    /// A retrieval's keys in the order written (empty for other kinds).
    pub keys: &'a [Bytes],
    /// Largest value length accepted (the listener's `max_value_size`: no client could have
    /// stored more through the proxy, and the proxy never buffers more for one value).
    pub max_value_size: usize,
}

/// memcached answers a retrieval with the hits in the order of the keys asked and leaves the
/// misses out; a key asked twice is answered twice. So the `n`-th `VALUE` block belongs to the
/// first key, after the previous block's, that equals the block's key. A block that fits no such
/// key means the stream is out of step with the FIFO. This is the one place that rule lives: the
/// parser applies it as each block arrives and records the position in [`Value::asked`]; callers
/// pair answers with keys through [`pair`].
#[derive(Debug)]
pub struct KeyOrder<'a> {
    keys: &'a [Bytes],
    next: usize,
}

impl<'a> KeyOrder<'a> {
    /// A walk over `keys` from the first.
    pub fn new(keys: &'a [Bytes]) -> KeyOrder<'a> {
        KeyOrder { keys, next: 0 }
    }

    /// The position of the key a block for `key` answers, or `None` if no key left matches.
    pub fn place(&mut self, key: &[u8]) -> Option<usize> {
        let rest = self.keys.get(self.next..)?;
        let at = self.next + rest.iter().position(|k| k[..] == *key)?;
        self.next = at + 1;
        Some(at)
    }
}

/// Pairs a retrieval answer with the `asked` keys of its request: yields, for each key in
/// request order, its value or `None` for a miss. No allocation.
pub fn pair(values: Vec<Value>, asked: usize) -> impl Iterator<Item = Option<Value>> {
    let mut values = values.into_iter().peekable();
    (0..asked).map(move |i| values.next_if(|v| v.asked == i))
}

/// True for `ERROR`, `CLIENT_ERROR …`, `SERVER_ERROR …` lines (with or without `\r\n`).
pub fn is_error_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR ") || line.starts_with(b"SERVER_ERROR ")
}

/// Takes one answer for `expect` off the front of `buf`; `Ok(None)` when incomplete. On an error
/// the buffer is left as it is: the connection is to be closed.
pub fn parse(expect: Expect<'_>, buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    match expect.kind {
        ReplyKind::Line => parse_line(buf),
        ReplyKind::Values => parse_values(expect, buf),
        ReplyKind::Meta => parse_meta(expect, buf),
        ReplyKind::MetaAnswer => {
            // Bounded like every other answer before the meta parser looks for its end.
            line_at(buf, 0)?;
            meta::parse_answer(buf, expect.max_value_size)
        }
    }
}

/// Length of the line starting at `from`, including `\n`; `None` while incomplete.
fn line_len(buf: &[u8], from: usize) -> Option<usize> {
    let nl = memchr::memchr(b'\n', buf.get(from..)?)?;
    Some(nl + 1)
}

/// The line starting at `from`, without `\r\n`, and the offset just past it; `Ok(None)` while
/// incomplete, an error once it is longer than [`LINE_MAX`] or not ended by `\r\n`.
fn line_at(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(LINE_MAX)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if rest.len() >= LINE_MAX {
            return Err(ProtocolError::line("line too long", window));
        }
        return Ok(None);
    };
    let Some(line) = window[..nl].strip_suffix(b"\r") else {
        return Err(ProtocolError::line(
            "line not ended by \\r\\n",
            &window[..nl],
        ));
    };
    Ok(Some((line, from + nl + 1)))
}

/// A single-line answer: a storage, delete, touch, arithmetic or error reply. A line of any other
/// shape (a `VALUE`, an `END`) answers some other request: the stream is out of step.
fn parse_line(buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    let Some((line, end)) = line_at(buf, 0)? else {
        return Ok(None);
    };
    const WORDS: [&[u8]; 7] = [
        b"STORED",
        b"NOT_STORED",
        b"EXISTS",
        b"NOT_FOUND",
        b"DELETED",
        b"TOUCHED",
        b"OK",
    ];
    let known = WORDS.contains(&line)
        || is_error_line(line)
        || line.starts_with(b"VERSION ")
        // memcached's refusals of `cache_memlimit` (MEMLIMIT_TOO_SMALL …, MEMLIMIT_ADJUST_FAILED …),
        // passed to the client as memcached words them.
        || line.starts_with(b"MEMLIMIT_")
        || (!line.is_empty() && line.iter().all(u8::is_ascii_digit));
    if !known {
        return Err(ProtocolError::line("not a reply line", line));
    }
    Ok(Some(Response::Line(buf.split_to(end).freeze())))
}

/// A decimal as memcached writes it: ASCII digits only, no sign, no blanks, fits 64 bits.
fn digits(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A value length no larger than `max`.
fn length(token: &[u8], max: usize, line: &[u8]) -> Result<usize, ProtocolError> {
    let n = digits(token).ok_or_else(|| ProtocolError::line("bad value length", line))?;
    match usize::try_from(n) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ProtocolError::line(
            "value length over max_value_size",
            line,
        )),
    }
}

/// Hits of one retrieval answer reserved for at the first (more grow the list).
const SPANS_RESERVED: usize = 64;

fn parse_values(expect: Expect<'_>, buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    // First pass over offsets; slices are cut once the whole answer is in.
    struct Span {
        key_len: usize,
        asked: usize,
        flags: u32,
        cas: Option<u64>,
        data_len: usize,
        block: (usize, usize),
    }
    let mut order = KeyOrder::new(expect.keys);
    let mut spans: Vec<Span> = Vec::new();
    let mut pos = 0;
    loop {
        let Some((line, data_start)) = line_at(buf, pos)? else {
            return Ok(None);
        };
        if line == b"END" {
            let all = buf.split_to(data_start).freeze();
            let values = spans
                .into_iter()
                .map(|s| {
                    let block = all.slice(s.block.0..s.block.1);
                    Value::new(block, s.key_len, s.data_len, s.asked, s.flags, s.cas)
                })
                .collect();
            return Ok(Some(Response::Values(values)));
        }
        if pos == 0 && is_error_line(line) {
            return Ok(Some(Response::Line(buf.split_to(data_start).freeze())));
        }
        let Some(ValueLine {
            key,
            flags,
            len,
            cas,
        }) = value_tokens(line)
        else {
            return Err(ProtocolError::line("not a VALUE line", line));
        };
        let Some(asked) = order.place(key) else {
            return Err(ProtocolError::line("VALUE for a key not asked here", line));
        };
        let flags = digits(flags)
            .and_then(|f| u32::try_from(f).ok())
            .ok_or_else(|| ProtocolError::line("bad flags", line))?;
        let cas = match cas {
            None => None,
            Some(c) => Some(digits(c).ok_or_else(|| ProtocolError::line("bad cas", line))?),
        };
        let len = length(len, expect.max_value_size, line)?;
        // No overflow: `len` is at most max_value_size and positions are within the buffer.
        let data_end = data_start + len;
        let Some(tail) = buf.get(data_end..data_end + 2) else {
            // Room for the rest of this value (and the `END` after it) at once: the reads that
            // bring it then go straight into place, instead of the buffer growing by doubling
            // and copying what it holds at each step (4 % of the CPU with 100 KiB values).
            // Bounded: `len` is at most max_value_size.
            buf.reserve(data_end + 2 + crate::protocol::reply::END.len() - buf.len());
            return Ok(None);
        };
        if tail != b"\r\n" {
            return Err(ProtocolError("value not terminated by \\r\\n".into()));
        }
        if spans.capacity() == 0 {
            // At the first hit, room for a hit on every key asked: growing by doubling cost a
            // `realloc` per doubling, most of a multi-key answer's allocations. Capped, so a
            // get of thousands of keys that mostly miss does not reserve for all of them.
            spans = Vec::with_capacity(expect.keys.len().clamp(1, SPANS_RESERVED));
        }
        spans.push(Span {
            key_len: key.len(),
            asked,
            flags,
            cas,
            data_len: len,
            block: (pos, data_end + 2),
        });
        pos = data_end + 2;
    }
}

/// The tokens of a `VALUE <key> <flags> <bytes> [<cas>]` line.
struct ValueLine<'a> {
    key: &'a [u8],
    flags: &'a [u8],
    len: &'a [u8],
    cas: Option<&'a [u8]>,
}

/// Splits a `VALUE` line at single spaces (an empty token where two spaces meet), as a split of
/// the whole line would. The key is found with one `memchr`; splitting the whole line byte by
/// byte was most of the parser's time.
fn value_tokens(line: &[u8]) -> Option<ValueLine<'_>> {
    let rest = line.strip_prefix(VALUE_PREFIX)?;
    let space = memchr::memchr(b' ', rest)?;
    let (key, rest) = rest.split_at(space);
    // `rest` starts with the space just found.
    let mut parts = rest.get(1..)?.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(flags), Some(len), cas, None) => Some(ValueLine {
            key,
            flags,
            len,
            cas,
        }),
        _ => None,
    }
}

fn parse_meta(expect: Expect<'_>, buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    let Some((line, data_start)) = line_at(buf, 0)? else {
        return Ok(None);
    };
    let Some(rest) = line.strip_prefix(b"VA ") else {
        return Ok(Some(Response::Line(buf.split_to(data_start).freeze())));
    };
    let mut parts = rest.split(|&b| b == b' ');
    let len = length(
        parts.next().unwrap_or_default(),
        expect.max_value_size,
        line,
    )?;
    let (mut flags, mut ttl) = (0, -1);
    for flag in parts {
        match flag.split_first() {
            Some((b'f', v)) => flags = digits(v).and_then(|f| u32::try_from(f).ok()).unwrap_or(0),
            Some((b't', v)) => {
                ttl = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1)
            }
            _ => {}
        }
    }
    let end = data_start + len;
    let Some(tail) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    if tail != b"\r\n" {
        return Err(ProtocolError("value not terminated by \\r\\n".into()));
    }
    let all = buf.split_to(end + 2).freeze();
    Ok(Some(Response::Meta {
        flags,
        ttl,
        data: all.slice(data_start..end),
    }))
}

#[cfg(test)]
mod tests;
