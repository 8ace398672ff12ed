//! The meta commands of memcached 1.6 (`mg ms md ma mn me`), client side.
//!
//! memroute checks a meta line exactly as memcached 1.6.18's `proto_text.c` does up to the point
//! where memcached touches the item (token count, key length, `_meta_flag_preparse`, the
//! per-command checks before the item lookup), answering those errors with memcached's line for
//! that command. A valid request is forwarded as the client wrote it, minus the `q` flag: the
//! backend then produces the exact reply bytes (flags in request order, `O`/`k` echoes, `W X Z`),
//! and every request gets one answer, so backend connections stay FIFOs. The proxy drops what `q`
//! would have hidden ([`MetaRequest::hides`]). Errors memcached finds only after it touched the
//! item (an `O` token over 32 bytes in `mg`/`ma`) come from the backend the same way.
//!
//! On tiered routes the same request goes to tier 0 and [`crate::route::tiers::meta`] adds the
//! fallback rules of DESIGN §4.
//!
//! A `b` key is decoded (memcached's own lenient decoder, [`base64_decode`]) before routing, so
//! the plain and the base64 form of a key land on the same server. The line sent upstream keeps
//! the base64 form and the `b`, so the backend stores the key as binary and echoes it as memcached
//! would.

use bytes::{Buf, Bytes, BytesMut};

use super::KEY_MAX_LENGTH;
use super::command::Keyed;
use super::number::{parse_i32, parse_u64};
use super::reply;
use super::request::{Invalid, Line, Request, Tokens};

/// memcached's `MFLAG_MAX_OPT_LENGTH`: more tokens than this (terminal token included) is an
/// error, so a meta line holds the command, the key and at most 17 flags (`ms`: 16 after the
/// length).
const MAX_OPT_TOKENS: usize = 20;

/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`.
const MAX_OPAQUE: usize = 32;

/// Which meta command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVerb {
    /// `mg <key> <flags>*`
    Get,
    /// `ms <key> <datalen> <flags>*` + data block
    Set,
    /// `md <key> <flags>*`
    Delete,
    /// `ma <key> <flags>*`
    Arith,
    /// `me <key> [b]`: item debug info.
    Debug,
}

/// A valid meta request, ready to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    /// Which command.
    pub verb: MetaVerb,
    /// The key the request routes by: for a `b` key the decoded bytes.
    pub key: Bytes,
    /// The line sent upstream, without `q` and without `\r\n`.
    pub line: Bytes,
    /// `ms` only: the value, without its `\r\n`.
    pub data: Option<Bytes>,
    /// The client asked for quiet mode (`q`).
    pub quiet: bool,
    /// The flag letters of the request (bit `c - b'A'` for each letter `c` in `A..=z`).
    pub flags: u64,
    /// The `M` mode character (`ms`, `ma`), if given.
    pub mode: Option<u8>,
}

impl MetaRequest {
    /// True if the request carries flag `c` (a letter).
    pub fn has(&self, c: u8) -> bool {
        flag_bit(c).is_some_and(|b| self.flags & b != 0)
    }

    /// True when quiet mode hides this answer from the client (memcached 1.6.18: `mg q` hides
    /// `EN`; `ms q` and `md q` hide `HD`; `ma q` hides `HD` and `VA`; errors are never hidden).
    pub fn hides(&self, answer: &[u8]) -> bool {
        if !self.quiet {
            return false;
        }
        let code = answer.get(..2).unwrap_or(answer);
        // The code is a whole token: `HD`, `HD O1`, `HD\r\n`.
        if !matches!(answer.get(2), Some(b' ' | b'\r' | b'\n') | None) {
            return false;
        }
        match self.verb {
            MetaVerb::Get => code == b"EN",
            MetaVerb::Set | MetaVerb::Delete => code == b"HD",
            MetaVerb::Arith => code == b"HD" || code == b"VA",
            MetaVerb::Debug => false,
        }
    }
}

fn flag_bit(c: u8) -> Option<u64> {
    (b'A'..=b'z').contains(&c).then(|| 1u64 << (c - b'A'))
}

/// Parses a meta command line (`cmd` is two bytes starting with `m`). `line_end` and `line_len`
/// are as in [`super::request::parse`]; nothing is consumed when `Ok(None)` (need more bytes).
pub(super) fn parse(buf: &mut BytesMut, line: &Line) -> Result<Option<Request>, Invalid> {
    let (t, line_end, line_len) = (line.tokens, line.end, line.len);
    let verb = match t.get(&buf[..line_end], 0) {
        b"mg" => MetaVerb::Get,
        b"ms" => MetaVerb::Set,
        b"md" => MetaVerb::Delete,
        b"ma" => MetaVerb::Arith,
        b"me" => MetaVerb::Debug,
        b"mn" => {
            buf.advance(line_len);
            return Ok(Some(Request::MetaNoop));
        }
        _ => return line.refuse(buf, Invalid::reply(reply::ERROR)),
    };
    if verb == MetaVerb::Set {
        return parse_set(buf, line);
    }
    let line = buf.split_to(line_len).freeze().slice(..line_end);
    let ntokens = t.ntokens();
    if verb == MetaVerb::Debug {
        return parse_debug(&line, t).map(Some);
    }
    if ntokens < 3 {
        return Err(Invalid::reply(reply::ERROR));
    }
    if t.get(&line, 1).len() > KEY_MAX_LENGTH {
        return Err(Invalid::reply(reply::BAD_FORMAT));
    }
    if ntokens > MAX_OPT_TOKENS {
        return Err(Invalid::reply(if verb == MetaVerb::Get {
            reply::META_FLAGS_ARE_TOO_LONG
        } else {
            reply::META_FLAGS_TOO_LONG
        }));
    }
    let flags = preparse(&line, t, 2).map_err(|e| {
        Invalid::reply(match verb {
            MetaVerb::Get => e,
            // md and ma ignore the specific reason (memcached's "FIXME: not using the preparse
            // errstr?").
            _ => reply::META_BAD_FLAG,
        })
    })?;
    if verb == MetaVerb::Arith && !matches!(flags.mode, None | Some(b'I' | b'+' | b'D' | b'-')) {
        return Err(Invalid::reply(reply::META_BAD_MA_MODE));
    }
    if verb == MetaVerb::Delete && flags.long_opaque {
        // md checks the opaque before it looks the item up.
        return Err(Invalid::reply(reply::META_OPAQUE_TOO_LONG));
    }
    Ok(Some(Request::Op {
        op: super::command::Command::Keyed(Keyed::Meta(MetaRequest {
            verb,
            key: flags.key,
            line: upstream_line(&line, t, flags.quiet),
            data: None,
            quiet: flags.quiet,
            flags: flags.letters,
            mode: flags.mode,
        })),
        noreply: false,
    }))
}

/// `me <key> [b]`: memcached answers a short line with `CLIENT_ERROR bad command line format`
/// (not `ERROR`), and decodes the key only when `b` is the very next token.
fn parse_debug(line: &Bytes, t: &Tokens) -> Result<Request, Invalid> {
    let ntokens = t.ntokens();
    if ntokens < 3 || t.get(line, 1).len() > KEY_MAX_LENGTH {
        return Err(Invalid::reply(reply::BAD_FORMAT));
    }
    let mut key = t.slice(line, 1);
    if ntokens >= 4 && t.get(line, 2) == b"b" {
        match base64_decode(&key) {
            Some(decoded) => key = Bytes::from(decoded),
            None => return Err(Invalid::reply(reply::BAD_FORMAT)),
        }
    }
    Ok(Request::Op {
        op: super::command::Command::Keyed(Keyed::Meta(MetaRequest {
            verb: MetaVerb::Debug,
            key,
            line: line.clone(),
            data: None,
            quiet: false,
            flags: 0,
            mode: None,
        })),
        noreply: false,
    })
}

/// `ms <key> <datalen> <flags>*` and its data block. Errors found before the flags are parsed
/// leave the data block unread (memcached then reads it as commands); flag errors and a
/// too-large value swallow it.
fn parse_set(buf: &mut BytesMut, at: &Line) -> Result<Option<Request>, Invalid> {
    let (t, line_end, line_len) = (at.tokens, at.end, at.len);
    let ntokens = t.ntokens();
    if ntokens < 3 {
        return at.refuse(buf, Invalid::reply(reply::ERROR));
    }
    let line = &buf[..line_end];
    if t.get(line, 1).len() > KEY_MAX_LENGTH || ntokens == 3 {
        return at.refuse(buf, Invalid::reply(reply::BAD_FORMAT));
    }
    if ntokens > MAX_OPT_TOKENS {
        return at.refuse(buf, Invalid::reply(reply::META_FLAGS_TOO_LONG));
    }
    let Some(vlen) = parse_i32(t.get(line, 2)).filter(|v| (0..=i32::MAX - 2).contains(v)) else {
        return at.refuse(buf, Invalid::reply(reply::BAD_FORMAT));
    };
    let vlen = vlen as usize;
    let swallow = |buf: &mut BytesMut, line: &'static [u8]| {
        buf.advance(line_len);
        Err(Invalid {
            swallow: vlen + 2,
            ..Invalid::reply(line)
        })
    };
    let flags = match preparse(line, t, 3) {
        Ok(flags) => flags,
        Err(e) => return swallow(buf, e),
    };
    // memcached checks the mode before it acts on a too-long opaque.
    if !matches!(flags.mode, None | Some(b'E' | b'A' | b'P' | b'R' | b'S')) {
        return swallow(buf, reply::META_BAD_MS_MODE);
    }
    if flags.long_opaque {
        return swallow(buf, reply::META_OPAQUE_TOO_LONG);
    }
    if vlen > at.limits.max_value_size {
        // As memcached: the value is refused, its data swallowed, and the item already stored
        // under the key is removed (whatever the mode), so no stale value survives.
        let line = buf.split_to(line_len).freeze().slice(..line_end);
        let forget = Keyed::Meta(forget_request(&line, t, flags.key, flags.letters));
        return Err(Invalid {
            swallow: vlen + 2,
            forget: Some(Box::new(forget)),
            ..Invalid::reply(reply::TOO_LARGE)
        });
    }
    if buf.len() < line_len + vlen + 2 {
        return Ok(None);
    }
    let block = buf.split_to(line_len + vlen + 2).freeze();
    if &block[line_len + vlen..] != b"\r\n" {
        // Never hidden by `q`: memcached clears noreply for this error in ms.
        return Err(Invalid::reply(reply::BAD_DATA_CHUNK));
    }
    let line = block.slice(..line_end);
    Ok(Some(Request::Op {
        op: super::command::Command::Keyed(Keyed::Meta(MetaRequest {
            verb: MetaVerb::Set,
            key: flags.key,
            line: upstream_line(&line, t, flags.quiet),
            data: Some(block.slice(line_len..line_len + vlen)),
            quiet: flags.quiet,
            flags: flags.letters,
            mode: flags.mode,
        })),
        noreply: false,
    }))
}

/// The `md` that removes the item a too-large `ms` refused: same key, same `b`.
fn forget_request(line: &Bytes, t: &Tokens, key: Bytes, letters: u64) -> MetaRequest {
    let mut md = BytesMut::with_capacity(t.get(line, 1).len() + 8);
    md.extend_from_slice(b"md ");
    md.extend_from_slice(t.get(line, 1));
    let binary = flag_bit(b'b').is_some_and(|b| letters & b != 0);
    if binary {
        md.extend_from_slice(b" b");
    }
    MetaRequest {
        verb: MetaVerb::Delete,
        key,
        line: md.freeze(),
        data: None,
        quiet: false,
        flags: 0,
        mode: None,
    }
}

/// The line without its `q` token (the backend must answer every request).
fn upstream_line(line: &Bytes, t: &Tokens, quiet: bool) -> Bytes {
    if !quiet {
        return line.clone();
    }
    let mut out = BytesMut::with_capacity(line.len());
    for i in 0..t.recorded() {
        let tok = t.get(line, i);
        if i >= 2 && tok.first() == Some(&b'q') {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b" ");
        }
        out.extend_from_slice(tok);
    }
    out.freeze()
}

/// What `_meta_flag_preparse` learns from the flags.
struct Flags {
    /// The routing key (decoded if `b`).
    key: Bytes,
    quiet: bool,
    mode: Option<u8>,
    /// An `O` token longer than memcached's limit.
    long_opaque: bool,
    letters: u64,
}

/// memcached's `_meta_flag_preparse` from token `start` on: a repeated flag or a byte ≥ 127 is
/// a "duplicate flag", an unknown one an "invalid flag" (both stop at once); a bad number or an
/// undecodable key is remembered and the scan goes on, the last reason winning. `F` with a bad
/// number keeps the reason found so far ("bad command line format" when none).
fn preparse(line: &[u8], t: &Tokens, start: usize) -> Result<Flags, &'static [u8]> {
    let key_token = t.get(line, 1);
    let mut flags = Flags {
        key: Bytes::copy_from_slice(key_token),
        quiet: false,
        mode: None,
        long_opaque: false,
        letters: 0,
    };
    let mut seen = [false; 127];
    let mut error: Option<&'static [u8]> = None;
    let mut failed = false;
    for i in start..t.recorded() {
        let tok = t.get(line, i);
        let Some(&o) = tok.first() else { continue };
        if o >= 127 || seen[o as usize] {
            return Err(reply::META_DUPLICATE_FLAG);
        }
        seen[o as usize] = true;
        if let Some(bit) = flag_bit(o) {
            flags.letters |= bit;
        }
        let arg = &tok[1..];
        let mut bad = |reason: Option<&'static [u8]>| {
            failed = true;
            if reason.is_some() {
                error = reason;
            }
        };
        match o {
            b'b' => match base64_decode(key_token) {
                Some(decoded) => flags.key = Bytes::from(decoded),
                None => bad(Some(reply::META_BAD_KEY_DECODE)),
            },
            b'N' | b'T' | b'R' if !is_long(arg) => bad(Some(reply::META_BAD_TOKEN)),
            b'N' | b'T' | b'R' => {}
            b'C' if parse_u64(arg).is_none() => bad(Some(reply::META_BAD_TOKEN)),
            b'F' if parse_u64(arg).is_none() => bad(None),
            b'M' if tok.len() != 2 => bad(Some(reply::META_BAD_M_LENGTH)),
            b'M' => flags.mode = Some(tok[1]),
            b'J' if parse_u64(arg).is_none() => bad(Some(reply::META_BAD_INITIAL)),
            b'D' if parse_u64(arg).is_none() => bad(Some(reply::META_BAD_DELTA)),
            b'O' => flags.long_opaque = tok.len() > MAX_OPAQUE,
            b'q' => flags.quiet = true,
            b'l' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'v' | b'h' | b'u' | b'I'
            | b'C' | b'F' | b'J' | b'D' => {}
            _ => return Err(reply::META_INVALID_FLAG),
        }
    }
    if failed {
        return Err(error.unwrap_or(reply::BAD_FORMAT));
    }
    Ok(flags)
}

/// memcached's `safe_strtol` on a 64-bit `long`: a number memcached accepts (it truncates it to
/// 32 bits, as the backend will; the proxy only decides accept or reject).
fn is_long(token: &[u8]) -> bool {
    let mut s = token;
    while let Some((b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r', rest)) = s.split_first() {
        s = rest;
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    let mut v: u64 = 0;
    for &d in digits {
        let Some(next) = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
        else {
            return false;
        };
        v = next;
    }
    v <= limit
}

/// memcached's `base64_decode` (base64.c): characters outside the alphabet are skipped, the
/// count of the others must be a positive multiple of 4, and decoding stops after the first
/// block with padding. `None` where memcached returns 0 (its "failed to decode").
pub fn base64_decode(src: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            b'=' => Some(0),
            _ => None,
        }
    }
    let count = src.iter().filter(|&&c| value(c).is_some()).count();
    if count == 0 || count % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(count / 4 * 3);
    let mut block = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    for &c in src {
        let Some(v) = value(c) else { continue };
        if c == b'=' {
            pad += 1;
        }
        block[n] = v;
        n += 1;
        if n == 4 {
            out.push((block[0] << 2) | (block[1] >> 4));
            out.push((block[1] << 4) | (block[2] >> 2));
            out.push((block[2] << 6) | block[3]);
            n = 0;
            if pad > 0 {
                match pad {
                    1 => out.truncate(out.len() - 1),
                    2 => out.truncate(out.len() - 2),
                    _ => return None,
                }
                break;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests;
