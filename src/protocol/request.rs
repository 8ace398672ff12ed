//! The client-side request parser.
//!
//! [`parse`] takes one request off the front of the client's read buffer. It distinguishes the
//! normal *incomplete* case (`Ok(None)`: read more) from an [`Invalid`] request, which carries the
//! exact reply memcached 1.6 sends and what to do with the connection. The rules mirror
//! memcached's `proto_text.c` (tokens split on spaces, at most 24 tokens, `noreply` as the last
//! token, the same numeric parsing) so clients see the same bytes as from memcached itself.
//! Limits are enforced before waiting for more input: a huge `<bytes>` field or a line with no
//! newline never makes the proxy buffer without bound.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memchr;

use super::KEY_MAX_LENGTH;
use super::command::{Command, Keyed, Retrieval, Retrieve, Storage};
use super::number::{parse_i32, parse_u32, parse_u64};
use super::reply;

/// memcached's `MAX_TOKENS`: a line is split into at most 23 tokens plus a terminal one.
const MAX_TOKENS: usize = 24;

/// Size limits the parser enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest value accepted in a storage command.
    pub max_value_size: usize,
    /// Longest line accepted without a newline.
    pub max_line_size: usize,
}

/// One parsed client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A command to route to a backend.
    Op {
        /// The command.
        op: Command,
        /// Send nothing back to the client.
        noreply: bool,
    },
    /// `version`
    Version,
    /// `verbosity <n> [noreply]`: accepted and ignored (the proxy's log level is its own).
    Verbosity {
        /// Send nothing back.
        noreply: bool,
    },
    /// `quit`: close after earlier replies are written.
    Quit,
    /// `stats` (no argument) or `stats <group> [args…]`.
    Stats {
        /// Everything after `stats` (`cachedump 1 10`, `detail on`), if anything.
        group: Option<Bytes>,
    },
    /// `cache_memlimit <megabytes> [noreply]`
    CacheMemlimit {
        /// The limit as written (memcached range-checks it).
        megabytes: u64,
        /// Send nothing back.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`
    FlushAll {
        /// Delay in seconds.
        delay: Option<i32>,
        /// Send nothing back.
        noreply: bool,
    },
    /// `mn`: answered `MN` by the proxy, after every earlier reply of the client.
    MetaNoop,
    /// A request the proxy answers itself with a fixed reply (`gat 10` with no key: `END`).
    Answered(&'static [u8]),
}

/// A request that cannot be served, with memcached's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The reply line.
    pub reply: &'static [u8],
    /// The request said `noreply`: memcached suppresses even error replies then.
    pub noreply: bool,
    /// Bytes still to discard after the consumed ones (the data block of a refused value),
    /// possibly not yet received.
    pub swallow: usize,
    /// Close the connection after the reply (cannot resync).
    pub close: bool,
    /// A command that removes the stored value: memcached deletes the old value when a `set`
    /// (or any `ms`) is refused as too large, so a client never reads the value it just tried
    /// to replace.
    pub forget: Option<Box<Keyed>>,
}

impl Invalid {
    pub(super) fn reply(reply: &'static [u8]) -> Self {
        Invalid {
            reply,
            noreply: false,
            swallow: 0,
            close: false,
            forget: None,
        }
    }

    fn noreply(mut self, noreply: bool) -> Self {
        self.noreply = noreply;
        self
    }
}

/// The client-side decoder: a read buffer plus the count of bytes still to discard after a
/// refused value. The session reads into [`Decoder::buffer`] and calls [`Decoder::next`].
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    swallow: usize,
    limits: Limits,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            buf: BytesMut::new(),
            swallow: 0,
            limits,
        }
    }

    /// Gives the buffer's memory back when it is empty and holds more than `keep` bytes.
    pub fn release_if_empty(&mut self, keep: usize) {
        if self.buf.is_empty() && self.buf.capacity() > keep {
            self.buf = BytesMut::new();
        }
    }

    /// The buffer to read client bytes into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete request or invalid input, or `None` when more bytes are needed.
    pub fn next_request(&mut self) -> Option<Result<Request, Invalid>> {
        if self.swallow > 0 {
            let n = self.swallow.min(self.buf.len());
            self.buf.advance(n);
            self.swallow -= n;
            if self.swallow > 0 {
                return None;
            }
        }
        match parse(&mut self.buf, &self.limits) {
            Ok(Some(request)) => Some(Ok(request)),
            Ok(None) => None,
            Err(invalid) => {
                self.swallow = invalid.swallow;
                Some(Err(invalid))
            }
        }
    }
}

/// Parses one request from the front of `buf`, consuming its bytes unless the request is
/// incomplete (`Ok(None)`). An `Err` has consumed the offending line (and data block if present).
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, Invalid> {
    let Some(nl) = memchr(b'\n', buf) else {
        if buf.len() > limits.max_line_size {
            buf.clear();
            return Err(Invalid {
                close: true,
                ..Invalid::reply(reply::LINE_TOO_LONG)
            });
        }
        return Ok(None);
    };
    if nl > limits.max_line_size {
        buf.clear();
        return Err(Invalid {
            close: true,
            ..Invalid::reply(reply::LINE_TOO_LONG)
        });
    }
    // memcached strips a `\r` before the `\n` when the line has at least two bytes.
    let line_end = if nl > 1 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line_len = nl + 1;

    // memcached treats the line as a C string: a NUL byte ends it. Cutting here too means a key
    // with a NUL is never forwarded (the backend would answer it twice and shift the FIFO).
    let line_end = memchr(0, &buf[..line_end]).unwrap_or(line_end);
    let tokens = Tokens::split(&buf[..line_end]);
    let line = Line {
        tokens: &tokens,
        end: line_end,
        len: line_len,
        limits,
    };
    let cmd = tokens.get(&buf[..line_end], 0);
    if tokens.count == 0 || cmd.len() < 2 {
        buf.advance(line_len);
        return Err(Invalid::reply(reply::ERROR));
    }

    // Meta commands are every two-byte command starting with `m`, as in memcached.
    if cmd.len() == 2 && cmd[0] == b'm' {
        return super::meta::parse(buf, &line);
    }

    // Storage commands need their data block before anything is consumed.
    let storage = match cmd {
        b"set" => Some(Storage::Set),
        b"add" => Some(Storage::Add),
        b"replace" => Some(Storage::Replace),
        b"append" => Some(Storage::Append),
        b"prepend" => Some(Storage::Prepend),
        b"cas" => Some(Storage::Cas),
        _ => None,
    };
    if let Some(kind) = storage {
        return parse_storage(buf, kind, &line);
    }

    let line = buf.split_to(line_len).freeze();
    let line = line.slice(..line_end);
    parse_line(&line, &tokens)
}

/// Everything but the storage commands: the request is the line alone.
fn parse_line(line: &Bytes, t: &Tokens) -> Result<Option<Request>, Invalid> {
    let request = match t.get(line, 0) {
        b"get" | b"gets" | b"gat" | b"gats" | b"bget" => parse_retrieval(line, t)?,
        b"incr" | b"decr" => parse_arith(line, t)?,
        b"delete" => parse_delete(line, t)?,
        b"touch" => parse_touch(line, t)?,
        _ => parse_local(line, t)?,
    };
    Ok(Some(request))
}

/// `get`/`gets`/`gat`/`gats <exptime>` (and `bget`) with their keys.
fn parse_retrieval(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    if t.ntokens() < 3 {
        return Err(Invalid::reply(reply::ERROR));
    }
    let kind = match t.get(line, 0) {
        b"gets" => Retrieval::Gets,
        b"gat" => Retrieval::Gat,
        b"gats" => Retrieval::Gats,
        _ => Retrieval::Get,
    };
    let touch = matches!(kind, Retrieval::Gat | Retrieval::Gats);
    let exptime = if touch {
        parse_i32(t.get(line, 1)).ok_or(Invalid::reply(reply::BAD_EXPTIME))?
    } else {
        0
    };
    // Keys are every token after the command (and exptime), beyond memcached's 24-token
    // window too: it re-tokenizes the rest of a long multi-get.
    let first = if touch { 2 } else { 1 };
    let mut keys = Vec::with_capacity(t.count.saturating_sub(first).max(1));
    for range in t.all_from(line, first) {
        if range.len() > KEY_MAX_LENGTH {
            return Err(Invalid::reply(reply::BAD_FORMAT));
        }
        keys.push(line.slice(range));
    }
    if keys.is_empty() {
        return Ok(Request::Answered(reply::END));
    }
    let op = Command::Retrieve(Retrieve {
        kind,
        exptime,
        keys,
    });
    Ok(Request::Op { op, noreply: false })
}

/// The key of a single-key command (`tok(1)`), or memcached's error for a long one.
fn single_key(line: &Bytes, t: &Tokens, noreply: bool) -> Result<Bytes, Invalid> {
    if t.get(line, 1).len() > KEY_MAX_LENGTH {
        return Err(Invalid::reply(reply::BAD_FORMAT).noreply(noreply));
    }
    Ok(t.slice(line, 1))
}

/// `<verb> <key> <number> [noreply]` (`incr`, `decr`, `touch`): the key, the number's token
/// and whether `noreply` was given; `ERROR` for any other token count.
fn key_and_number<'l>(line: &'l Bytes, t: &Tokens) -> Result<(Bytes, &'l [u8], bool), Invalid> {
    let ntokens = t.ntokens();
    if ntokens != 4 && ntokens != 5 {
        return Err(Invalid::reply(reply::ERROR));
    }
    let noreply = t.get(line, t.last()) == b"noreply";
    let key = single_key(line, t, noreply)?;
    Ok((key, t.get(line, 2), noreply))
}

/// `incr|decr <key> <delta> [noreply]`
fn parse_arith(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    let (key, delta, noreply) = key_and_number(line, t)?;
    let delta = parse_u64(delta).ok_or(Invalid::reply(reply::BAD_DELTA).noreply(noreply))?;
    let op = Command::Keyed(Keyed::Arith {
        incr: t.get(line, 0) == b"incr",
        key,
        delta,
    });
    Ok(Request::Op { op, noreply })
}

/// `delete <key> [0] [noreply]`: memcached still accepts a zero hold time.
fn parse_delete(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    let ntokens = t.ntokens();
    if !(3..=5).contains(&ntokens) {
        return Err(Invalid::reply(reply::ERROR));
    }
    let mut noreply = false;
    if ntokens > 3 {
        let hold_is_zero = t.get(line, 2) == b"0";
        noreply = t.get(line, t.last()) == b"noreply";
        let valid = (ntokens == 4 && (hold_is_zero || noreply))
            || (ntokens == 5 && hold_is_zero && noreply);
        if !valid {
            return Err(Invalid::reply(reply::BAD_DELETE).noreply(noreply));
        }
    }
    let key = single_key(line, t, noreply)?;
    let op = Command::Keyed(Keyed::Delete { key });
    Ok(Request::Op { op, noreply })
}

/// `touch <key> <exptime> [noreply]`
fn parse_touch(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    let (key, exptime, noreply) = key_and_number(line, t)?;
    let exptime = parse_i32(exptime).ok_or(Invalid::reply(reply::BAD_EXPTIME).noreply(noreply))?;
    let op = Command::Keyed(Keyed::Touch { key, exptime });
    Ok(Request::Op { op, noreply })
}

/// The commands memroute answers itself (or fans out): `version`, `quit`, `verbosity`,
/// `stats`, `cache_memlimit`, `flush_all`; anything else is `ERROR`.
fn parse_local(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    let tok = |i: usize| t.get(line, i);
    let ntokens = t.ntokens();
    let noreply = tok(t.last()) == b"noreply";
    let request = match tok(0) {
        // memcached 1.6 ignores extra tokens here; memcached before 1.6 answered ERROR. memroute
        // reports its own version (0.x), and clients such as libmemcached's memcapable pick
        // the pre-1.6 rules from it, so extra tokens get ERROR, consistent with that version.
        b"version" | b"quit" if ntokens != 2 => return Err(Invalid::reply(reply::ERROR)),
        b"version" => Request::Version,
        b"quit" => Request::Quit,
        b"verbosity" => {
            if ntokens != 3 && ntokens != 4 {
                return Err(Invalid::reply(reply::ERROR));
            }
            parse_u32(tok(1)).ok_or(Invalid::reply(reply::BAD_FORMAT).noreply(noreply))?;
            Request::Verbosity { noreply }
        }
        b"stats" => {
            // The whole argument text: `stats cachedump 1 10` and `stats detail on` take
            // several tokens ([`crate::server::local`] splits them).
            let group = (ntokens > 2).then(|| {
                let start = t.range(1).start;
                let end = line
                    .iter()
                    .rposition(|&b| b != b' ')
                    .map_or(start, |i| i + 1);
                line.slice(start..end.max(start))
            });
            Request::Stats { group }
        }
        // memcached: exactly one argument plus an optional token (`noreply`, or ignored);
        // a non-numeric limit is ERROR, even with `noreply` silenced.
        b"cache_memlimit" => {
            if ntokens != 3 && ntokens != 4 {
                return Err(Invalid::reply(reply::ERROR));
            }
            let megabytes =
                parse_u64(tok(1)).ok_or(Invalid::reply(reply::ERROR).noreply(noreply))?;
            Request::CacheMemlimit { megabytes, noreply }
        }
        b"flush_all" => {
            if !(2..=4).contains(&ntokens) {
                return Err(Invalid::reply(reply::ERROR));
            }
            let delay = if ntokens != if noreply { 3 } else { 2 } {
                Some(parse_i32(tok(1)).ok_or(Invalid::reply(reply::BAD_EXPTIME).noreply(noreply))?)
            } else {
                None
            };
            Request::FlushAll { delay, noreply }
        }
        // memcached drops a connection that speaks HTTP to it.
        _ if tok(t.last()).starts_with(b"HTTP/") => {
            return Err(Invalid {
                close: true,
                reply: b"",
                ..Invalid::reply(reply::ERROR)
            });
        }
        _ => return Err(Invalid::reply(reply::ERROR)),
    };
    Ok(request)
}

/// `set`/`add`/`replace`/`append`/`prepend`/`cas`: the line, then `<bytes>` of data and `\r\n`.
fn parse_storage(buf: &mut BytesMut, kind: Storage, at: &Line) -> Result<Option<Request>, Invalid> {
    let (t, line_end, line_len) = (at.tokens, at.end, at.len);
    let ntokens = t.ntokens();
    let want = if kind == Storage::Cas { [7, 8] } else { [6, 7] };
    let line = &buf[..line_end];
    if !want.contains(&ntokens) {
        return at.refuse(buf, Invalid::reply(reply::ERROR));
    }
    let noreply = t.get(line, t.last()) == b"noreply";
    let bad = Invalid::reply(reply::BAD_FORMAT).noreply(noreply);
    if t.get(line, 1).len() > KEY_MAX_LENGTH {
        return at.refuse(buf, bad);
    }
    let (Some(flags), Some(exptime), Some(vlen)) = (
        parse_u32(t.get(line, 2)),
        parse_i32(t.get(line, 3)),
        parse_i32(t.get(line, 4)),
    ) else {
        return at.refuse(buf, bad);
    };
    let cas = if kind == Storage::Cas {
        match parse_u64(t.get(line, 5)) {
            Some(cas) => cas,
            None => return at.refuse(buf, bad),
        }
    } else {
        0
    };
    if !(0..=i32::MAX - 2).contains(&vlen) {
        return at.refuse(buf, bad);
    }
    let vlen = vlen as usize;
    if vlen > at.limits.max_value_size {
        // Refused before the data arrives; the data block is discarded as it comes in.
        let line = buf.split_to(line_len).freeze();
        let forget = (kind == Storage::Set).then(|| {
            Box::new(Keyed::Delete {
                key: t.slice(&line, 1),
            })
        });
        return Err(Invalid {
            swallow: vlen + 2,
            forget,
            ..Invalid::reply(reply::TOO_LARGE).noreply(noreply)
        });
    }
    if buf.len() < line_len + vlen + 2 {
        return Ok(None);
    }
    let key_range = t.range(1);
    let block = buf.split_to(line_len + vlen + 2).freeze();
    if &block[line_len + vlen..] != b"\r\n" {
        return Err(Invalid::reply(reply::BAD_DATA_CHUNK).noreply(noreply));
    }
    let op = Command::Keyed(Keyed::Store {
        kind,
        key: block.slice(key_range),
        flags,
        exptime,
        data: block.slice(line_len..line_len + vlen),
        cas,
    });
    Ok(Some(Request::Op { op, noreply }))
}

/// A complete request line at the start of the buffer: its tokens, where its text ends (before
/// `\r\n`, or at a NUL), the bytes it takes with its line ending, and the limits that apply.
pub(super) struct Line<'a> {
    pub tokens: &'a Tokens,
    pub end: usize,
    pub len: usize,
    pub limits: &'a Limits,
}

impl Line<'_> {
    /// Consumes the line (not a data block after it) and answers `invalid`: the way out for an
    /// error found on the line itself.
    pub(super) fn refuse(
        &self,
        buf: &mut BytesMut,
        invalid: Invalid,
    ) -> Result<Option<Request>, Invalid> {
        buf.advance(self.len);
        Err(invalid)
    }
}

/// Token positions of one line, split on spaces as memcached's `tokenize_command` does: at most
/// 23 tokens are recorded; `count` keeps counting beyond.
pub(super) struct Tokens {
    spans: [(u32, u32); MAX_TOKENS - 1],
    /// Number of tokens on the line (may exceed the recorded 23).
    count: usize,
}

impl Tokens {
    fn split(line: &[u8]) -> Tokens {
        let mut spans = [(0u32, 0u32); MAX_TOKENS - 1];
        let mut count = 0;
        // Tokens are the non-empty runs between spaces and the line's ends. (A plain loop:
        // `memchr` per space costs more than it saves on lines of a few dozen bytes.)
        let mut record = |start: usize, end: usize| {
            if end > start {
                if let Some(span) = spans.get_mut(count) {
                    *span = (start as u32, end as u32);
                }
                count += 1;
            }
        };
        let mut start = 0;
        for (i, &b) in line.iter().enumerate() {
            if b == b' ' {
                record(start, i);
                start = i + 1;
            }
        }
        record(start, line.len());
        Tokens { spans, count }
    }

    /// memcached's `ntokens`: recorded tokens plus the terminal token.
    pub(super) fn ntokens(&self) -> usize {
        self.count.min(MAX_TOKENS - 1) + 1
    }

    /// Number of recorded tokens (at most 23), the terminal one not included.
    pub(super) fn recorded(&self) -> usize {
        self.count.min(MAX_TOKENS - 1)
    }

    /// Index of the last recorded token (memcached's `ntokens - 2`).
    fn last(&self) -> usize {
        self.count.clamp(1, MAX_TOKENS - 1) - 1
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        if i < self.count.min(MAX_TOKENS - 1) {
            let (s, e) = self.spans[i];
            s as usize..e as usize
        } else {
            0..0
        }
    }

    pub(super) fn get<'a>(&self, line: &'a [u8], i: usize) -> &'a [u8] {
        &line[self.range(i)]
    }

    pub(super) fn slice(&self, line: &Bytes, i: usize) -> Bytes {
        line.slice(self.range(i))
    }

    /// Every token from index `first` on, including those past the 23 recorded.
    fn all_from<'a>(
        &'a self,
        line: &'a [u8],
        first: usize,
    ) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
        let recorded = (first..self.count.min(MAX_TOKENS - 1)).map(|i| self.range(i));
        let rest_start = if self.count > MAX_TOKENS - 1 {
            self.spans[MAX_TOKENS - 2].1 as usize
        } else {
            line.len()
        };
        let rest_first = first.saturating_sub(MAX_TOKENS - 1);
        let rest = split_spaces(line, rest_start).skip(rest_first);
        recorded.chain(rest)
    }
}

/// Token ranges of `line[from..]`, split on spaces.
fn split_spaces(line: &[u8], from: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut i = from;
    std::iter::from_fn(move || {
        while i < line.len() && line[i] == b' ' {
            i += 1;
        }
        if i >= line.len() {
            return None;
        }
        let s = i;
        while i < line.len() && line[i] != b' ' {
            i += 1;
        }
        Some(s..i)
    })
}

#[cfg(test)]
pub(super) mod tests;
