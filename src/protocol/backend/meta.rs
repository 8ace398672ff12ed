//! Answers to client meta commands, kept whole: the proxy forwards memcached's bytes as they are
//! and only needs to know where an answer ends.
//!
//! An answer is one status line (`HD`, `EN`, `NF`, `NS`, `EX`, `MN`, `ME …`, or an error line),
//! or a `VA <len> <flags>*` line followed by `<len>` bytes and `\r\n`.

use bytes::BytesMut;

use super::{ProtocolError, Response, is_error_line, line_len};
use crate::protocol::number::parse_u64;

/// Takes one meta answer off the front of `buf` as a [`Response::Line`] holding all of its
/// bytes; `Ok(None)` when incomplete. A `VA` length over `max_value_size` is refused at once.
pub fn parse_answer(
    buf: &mut BytesMut,
    max_value_size: usize,
) -> Result<Option<Response>, ProtocolError> {
    let Some(n) = line_len(buf, 0) else {
        return Ok(None);
    };
    let line = &buf[..n];
    let code = line.get(..2).unwrap_or(line);
    let whole_token = matches!(line.get(2), Some(b' ' | b'\r' | b'\n'));
    let total = match code {
        b"VA" if whole_token => {
            let len = line[3.min(line.len())..]
                .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
                .next()
                .and_then(parse_u64)
                .and_then(|l| usize::try_from(l).ok())
                .filter(|&l| l <= max_value_size)
                .ok_or_else(|| bad(line))?;
            let end = n
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or_else(|| bad(line))?;
            if buf.len() < end {
                // Room for the rest of the value at once, as for a `VALUE` (bounded by
                // max_value_size): no growing by doubling while it arrives.
                buf.reserve(end - buf.len());
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError("meta value not terminated by \\r\\n".into()));
            }
            end
        }
        b"HD" | b"EN" | b"NF" | b"NS" | b"EX" | b"MN" | b"ME" if whole_token => n,
        _ if is_error_line(line) => n,
        _ => return Err(bad(line)),
    };
    Ok(Some(Response::Line(buf.split_to(total).freeze())))
}

fn bad(line: &[u8]) -> ProtocolError {
    ProtocolError(String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(b: &mut BytesMut) -> Option<Vec<u8>> {
        match parse_answer(b, 1024).unwrap() {
            Some(Response::Line(l)) => Some(l.to_vec()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn whole_answers_in_order() {
        let all: &[u8] = b"VA 2 f5 t-1\r\nhi\r\nHD O1\r\nEN\r\nVA 0\r\n\r\nME k exp=-1 la=1\r\nSERVER_ERROR x\r\n";
        for cut in 0..13 + 4 {
            assert_eq!(
                parse_answer(&mut BytesMut::from(&all[..cut]), 1024),
                Ok(None),
                "{cut}"
            );
        }
        let mut b = BytesMut::from(all);
        assert_eq!(take(&mut b).unwrap(), b"VA 2 f5 t-1\r\nhi\r\n");
        assert_eq!(take(&mut b).unwrap(), b"HD O1\r\n");
        assert_eq!(take(&mut b).unwrap(), b"EN\r\n");
        assert_eq!(take(&mut b).unwrap(), b"VA 0\r\n\r\n");
        assert_eq!(take(&mut b).unwrap(), b"ME k exp=-1 la=1\r\n");
        assert_eq!(take(&mut b).unwrap(), b"SERVER_ERROR x\r\n");
        assert!(b.is_empty());
    }

    #[test]
    fn garbage_and_bad_blocks_are_protocol_errors() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"HDX\r\n",
            b"VA x\r\n",
            b"VA 2\r\nabcd\r\n",
            b"VA 99999999999999999999\r\n",
            b"VA 1025\r\n",
        ] {
            assert!(
                parse_answer(&mut BytesMut::from(bad), 1024).is_err(),
                "{bad:?}"
            );
        }
    }
}
