//! Parses backend answers. A backend connection is a FIFO, so the parser is told which
//! [`ReplyKind`] the oldest outstanding request expects and takes exactly one answer off the
//! front of the buffer. Values come back as `Bytes` slices of the connection's read buffer.

pub mod meta;

use bytes::{Bytes, BytesMut};

use super::command::ReplyKind;
use super::number::{parse_u32, parse_u64};

/// One `VALUE` block of a retrieval answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The key as the backend echoed it.
    pub key: Bytes,
    /// Client flags.
    pub flags: u32,
    /// CAS token (`gets`/`gats`).
    pub cas: Option<u64>,
    /// The value, without `\r\n`.
    pub data: Bytes,
    /// The whole block (`VALUE …\r\n<data>\r\n`), forwarded to clients as is.
    pub block: Bytes,
}

/// One complete backend answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A single line including its `\r\n` (`STORED`, `NOT_FOUND`, a number, `SERVER_ERROR …`);
    /// for a client's meta command, its whole answer (a `VA` data block included).
    Line(Bytes),
    /// A retrieval answer: the hits in order; `END` was seen.
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

/// True for `ERROR`, `CLIENT_ERROR …`, `SERVER_ERROR …` lines.
pub fn is_error_line(line: &[u8]) -> bool {
    line.starts_with(b"ERROR")
        || line.starts_with(b"CLIENT_ERROR")
        || line.starts_with(b"SERVER_ERROR")
}

/// Takes one answer of shape `kind` off the front of `buf`; `Ok(None)` when incomplete.
pub fn parse(kind: ReplyKind, buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    match kind {
        ReplyKind::Line => Ok(line_len(buf, 0).map(|n| Response::Line(buf.split_to(n).freeze()))),
        ReplyKind::Values => parse_values(buf),
        ReplyKind::Meta => parse_meta(buf),
        ReplyKind::MetaAnswer => meta::parse_answer(buf),
    }
}

/// Length of the line starting at `from`, including `\r\n`.
fn line_len(buf: &[u8], from: usize) -> Option<usize> {
    let nl = buf[from..].iter().position(|&b| b == b'\n')?;
    Some(nl + 1)
}

fn parse_values(buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    // First pass over offsets; slices are cut once the whole answer is in.
    struct Span {
        key: (usize, usize),
        flags: u32,
        cas: Option<u64>,
        data: (usize, usize),
        block: (usize, usize),
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(n) = line_len(buf, pos) else {
            return Ok(None);
        };
        let line = trim_eol(&buf[pos..pos + n]);
        if line == b"END" {
            let all = buf.split_to(pos + n).freeze();
            let values = spans
                .into_iter()
                .map(|s| Value {
                    key: all.slice(s.key.0..s.key.1),
                    flags: s.flags,
                    cas: s.cas,
                    data: all.slice(s.data.0..s.data.1),
                    block: all.slice(s.block.0..s.block.1),
                })
                .collect();
            return Ok(Some(Response::Values(values)));
        }
        if pos == 0 && is_error_line(line) {
            return Ok(Some(Response::Line(buf.split_to(n).freeze())));
        }
        let mut parts = line.split(|&b| b == b' ');
        let (Some(b"VALUE"), Some(key), Some(flags), Some(len)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProtocolError(String::from_utf8_lossy(line).into_owned()));
        };
        let cas = parts.next().and_then(parse_u64);
        let (Some(flags), Some(len)) = (parse_u32(flags), parse_u64(len)) else {
            return Err(ProtocolError(String::from_utf8_lossy(line).into_owned()));
        };
        let key_start = pos + 6;
        let data_start = pos + n;
        let data_end = data_start + len as usize;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(ProtocolError("value not terminated by \\r\\n".into()));
        }
        spans.push(Span {
            key: (key_start, key_start + key.len()),
            flags,
            cas,
            data: (data_start, data_end),
            block: (pos, data_end + 2),
        });
        pos = data_end + 2;
    }
}

fn parse_meta(buf: &mut BytesMut) -> Result<Option<Response>, ProtocolError> {
    let Some(n) = line_len(buf, 0) else {
        return Ok(None);
    };
    let line = trim_eol(&buf[..n]);
    if !line.starts_with(b"VA ") {
        return Ok(Some(Response::Line(buf.split_to(n).freeze())));
    }
    let mut parts = line.split(|&b| b == b' ').skip(1);
    let len = parts
        .next()
        .and_then(parse_u64)
        .ok_or_else(|| ProtocolError("bad VA line".into()))?;
    let (mut flags, mut ttl) = (0, -1);
    for flag in parts {
        match flag.split_first() {
            Some((b'f', v)) => flags = parse_u32(v).unwrap_or(0),
            Some((b't', v)) => {
                ttl = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1)
            }
            _ => {}
        }
    }
    let end = n + len as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    let all = buf.split_to(end + 2).freeze();
    Ok(Some(Response::Meta {
        flags,
        ttl,
        data: all.slice(n..end),
    }))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(b: &[u8]) -> BytesMut {
        BytesMut::from(b)
    }

    #[test]
    fn values_need_the_whole_answer() {
        let full = b"VALUE a 5 3 77\r\nabc\r\nVALUE b 0 0\r\n\r\nEND\r\nSTORED\r\n";
        for cut in 0..full.len() - 8 {
            let mut b = buf(&full[..cut]);
            assert_eq!(parse(ReplyKind::Values, &mut b), Ok(None), "cut {cut}");
        }
        let mut b = buf(full);
        let Some(Response::Values(v)) = parse(ReplyKind::Values, &mut b).unwrap() else {
            panic!()
        };
        assert_eq!(v.len(), 2);
        assert_eq!(
            (&v[0].key[..], v[0].flags, v[0].cas, &v[0].data[..]),
            (&b"a"[..], 5, Some(77), &b"abc"[..])
        );
        assert_eq!(&v[1].block[..], b"VALUE b 0 0\r\n\r\n");
        assert_eq!(&b[..], b"STORED\r\n");
    }

    #[test]
    fn error_line_ends_a_retrieval() {
        let mut b = buf(b"SERVER_ERROR out of memory\r\n");
        assert_eq!(
            parse(ReplyKind::Values, &mut b).unwrap(),
            Some(Response::Line(Bytes::from_static(
                b"SERVER_ERROR out of memory\r\n"
            )))
        );
    }

    #[test]
    fn meta_get_hit_and_miss() {
        let mut b = buf(b"VA 2 f9 t-1\r\nhi\r\nEN\r\n");
        assert_eq!(
            parse(ReplyKind::Meta, &mut b).unwrap(),
            Some(Response::Meta {
                flags: 9,
                ttl: -1,
                data: Bytes::from_static(b"hi")
            })
        );
        assert_eq!(
            parse(ReplyKind::Meta, &mut b).unwrap(),
            Some(Response::Line(Bytes::from_static(b"EN\r\n")))
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(parse(ReplyKind::Values, &mut buf(b"HELLO\r\n")).is_err());
    }
}
