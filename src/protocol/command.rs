//! The keyed operations memroute forwards, and how each is written to a backend.
//!
//! An [`Op`] holds its key(s) and value as `Bytes` slices of the client's read buffer, so a
//! request travels to the backend without copying into new allocations. Upstream requests never
//! carry `noreply` (DESIGN §1): every backend connection stays a plain FIFO of answers.

use bytes::{BufMut, Bytes, BytesMut};

pub use super::meta::MetaRequest;

/// The four retrieval commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// `get <key>*`
    Get,
    /// `gets <key>*`: with CAS tokens.
    Gets,
    /// `gat <exptime> <key>*`: get and touch.
    Gat,
    /// `gats <exptime> <key>*`: get and touch, with CAS tokens.
    Gats,
}

impl Retrieval {
    /// The command word.
    pub fn verb(self) -> &'static str {
        match self {
            Retrieval::Get => "get",
            Retrieval::Gets => "gets",
            Retrieval::Gat => "gat",
            Retrieval::Gats => "gats",
        }
    }
}

/// The six storage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `set`
    Set,
    /// `add`: only if absent.
    Add,
    /// `replace`: only if present.
    Replace,
    /// `append`: after the existing value.
    Append,
    /// `prepend`: before the existing value.
    Prepend,
    /// `cas`: only if the CAS token still matches.
    Cas,
}

impl Storage {
    /// The command word.
    pub fn verb(self) -> &'static str {
        match self {
            Storage::Set => "set",
            Storage::Add => "add",
            Storage::Replace => "replace",
            Storage::Append => "append",
            Storage::Prepend => "prepend",
            Storage::Cas => "cas",
        }
    }
}

/// What a client asks memroute to route: one key, or a retrieval of one or more keys.
/// [`crate::route::dispatch`] picks plain or tiered routing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A command on one key.
    Keyed(Keyed),
    /// `get`/`gets`/`gat`/`gats` with one or more keys.
    Retrieve(Retrieve),
}

/// A client's `get`/`gets`/`gat`/`gats`, as routing takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieve {
    /// Which retrieval command.
    pub kind: Retrieval,
    /// For `gat`/`gats` only.
    pub exptime: i32,
    /// The keys in request order (duplicates kept).
    pub keys: Vec<Bytes>,
}

/// A command on exactly one key: it routes by [`Keyed::key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyed {
    /// A storage command.
    Store {
        /// Which storage command.
        kind: Storage,
        /// The key.
        key: Bytes,
        /// Client flags.
        flags: u32,
        /// Expiration time as sent by the client.
        exptime: i32,
        /// The value, without its trailing `\r\n`.
        data: Bytes,
        /// The CAS token (`cas` only).
        cas: u64,
    },
    /// `delete <key>`
    Delete {
        /// The key.
        key: Bytes,
    },
    /// `incr` / `decr`
    Arith {
        /// True for `incr`.
        incr: bool,
        /// The key.
        key: Bytes,
        /// The delta.
        delta: u64,
    },
    /// `touch <key> <exptime>`
    Touch {
        /// The key.
        key: Bytes,
        /// New expiration time.
        exptime: i32,
    },
    /// A client's meta command (`mg`, `ms`, `md`, `ma`, `me`), forwarded without `q`.
    Meta(MetaRequest),
    /// `mg <key> v f t`: value, flags and remaining TTL, sent by the fallback copier (never by a
    /// client: their `mg` is a [`Keyed::Meta`]).
    CopyRead {
        /// The key.
        key: Bytes,
    },
}

impl Keyed {
    /// The key the command routes by (for a base64 meta key, the decoded bytes).
    pub fn key(&self) -> &Bytes {
        match self {
            Keyed::Store { key, .. }
            | Keyed::Delete { key }
            | Keyed::Arith { key, .. }
            | Keyed::Touch { key, .. }
            | Keyed::CopyRead { key } => key,
            Keyed::Meta(m) => &m.key,
        }
    }
}

/// What goes on a backend connection: a keyed command, a retrieval (which the connection may
/// merge with its neighbours), or the fan-out `flush_all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A command on one key.
    Keyed(Keyed),
    /// A retrieval for one or more keys.
    Get {
        /// Which retrieval command.
        kind: Retrieval,
        /// For `gat`/`gats` only.
        exptime: i32,
        /// The keys in request order (duplicates kept).
        keys: Vec<Bytes>,
    },
    /// `flush_all [delay]`, sent to every server.
    FlushAll {
        /// Optional delay in seconds.
        delay: Option<i32>,
    },
    /// `cache_memlimit <megabytes>`, sent to every server (behind the same switch as flush_all).
    CacheMemlimit {
        /// The new memory limit in megabytes, as the client wrote it (memcached checks it).
        megabytes: u64,
    },
}

impl From<Keyed> for Op {
    fn from(k: Keyed) -> Op {
        Op::Keyed(k)
    }
}

/// What shape of answer a backend sends for an [`Op`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `VALUE …` blocks then `END`.
    Values,
    /// One line.
    Line,
    /// The copier's meta answer: `VA <len> …` plus a data block, or one line (`EN`, errors).
    Meta,
    /// A client meta command's answer, kept whole: a `VA` line with its data block, or one
    /// status line (see [`crate::protocol::backend::meta`]).
    MetaAnswer,
}

impl Op {
    /// The answer shape to expect.
    pub fn reply_kind(&self) -> ReplyKind {
        match self {
            Op::Get { .. } => ReplyKind::Values,
            Op::Keyed(Keyed::CopyRead { .. }) => ReplyKind::Meta,
            Op::Keyed(Keyed::Meta(_)) => ReplyKind::MetaAnswer,
            _ => ReplyKind::Line,
        }
    }

    /// Appends the wire form (always without `noreply` / `q`) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Op::Get {
                kind,
                exptime,
                keys,
            } => put_retrieval(*kind, *exptime, keys, buf),
            Op::Keyed(keyed) => encode_keyed(keyed, buf),
            Op::FlushAll { delay } => {
                buf.put_slice(b"flush_all");
                if let Some(d) = delay {
                    buf.put_u8(b' ');
                    put_int(buf, i64::from(*d));
                }
            }
            Op::CacheMemlimit { megabytes } => {
                buf.put_slice(b"cache_memlimit ");
                put_u64(buf, *megabytes);
            }
        }
        buf.put_slice(b"\r\n");
    }
}

/// Appends a keyed command without its final `\r\n`.
fn encode_keyed(keyed: &Keyed, buf: &mut BytesMut) {
    match keyed {
        Keyed::Store {
            kind,
            key,
            flags,
            exptime,
            data,
            cas,
        } => {
            buf.reserve(key.len() + data.len() + 64);
            buf.put_slice(kind.verb().as_bytes());
            buf.put_u8(b' ');
            buf.put_slice(key);
            buf.put_u8(b' ');
            put_int(buf, i64::from(*flags));
            buf.put_u8(b' ');
            put_int(buf, i64::from(*exptime));
            buf.put_u8(b' ');
            put_int(buf, data.len() as i64);
            if *kind == Storage::Cas {
                buf.put_u8(b' ');
                put_u64(buf, *cas);
            }
            buf.put_slice(b"\r\n");
            buf.put_slice(data);
        }
        Keyed::Delete { key } => {
            buf.put_slice(b"delete ");
            buf.put_slice(key);
        }
        Keyed::Arith { incr, key, delta } => {
            buf.put_slice(if *incr { b"incr " } else { b"decr " });
            buf.put_slice(key);
            buf.put_u8(b' ');
            put_u64(buf, *delta);
        }
        Keyed::Touch { key, exptime } => {
            buf.put_slice(b"touch ");
            buf.put_slice(key);
            buf.put_u8(b' ');
            put_int(buf, i64::from(*exptime));
        }
        Keyed::Meta(m) => {
            buf.reserve(m.line.len() + m.data.as_ref().map_or(0, |d| d.len()) + 4);
            buf.put_slice(&m.line);
            if let Some(data) = &m.data {
                buf.put_slice(b"\r\n");
                buf.put_slice(data);
            }
        }
        Keyed::CopyRead { key } => {
            buf.put_slice(b"mg ");
            buf.put_slice(key);
            buf.put_slice(b" v f t");
        }
    }
}

/// Appends a retrieval line without its `\r\n`: the verb, the `gat` time, the keys.
pub fn put_retrieval(kind: Retrieval, exptime: i32, keys: &[Bytes], buf: &mut BytesMut) {
    buf.put_slice(kind.verb().as_bytes());
    if matches!(kind, Retrieval::Gat | Retrieval::Gats) {
        buf.put_u8(b' ');
        put_int(buf, i64::from(exptime));
    }
    for key in keys {
        buf.put_u8(b' ');
        buf.put_slice(key);
    }
}

/// Writes a signed decimal without going through `fmt`.
pub fn put_int(buf: &mut BytesMut, v: i64) {
    if v < 0 {
        buf.put_u8(b'-');
    }
    put_u64(buf, v.unsigned_abs());
}

/// Writes an unsigned decimal without going through `fmt`.
pub fn put_u64(buf: &mut BytesMut, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.put_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(op: Op) -> Vec<u8> {
        let mut b = BytesMut::new();
        op.encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn encodes_every_op_without_noreply() {
        let k = Bytes::from_static(b"k");
        assert_eq!(
            wire(Op::Get {
                kind: Retrieval::Gats,
                exptime: -1,
                keys: vec![k.clone(), k.clone()]
            }),
            b"gats -1 k k\r\n"
        );
        assert_eq!(
            wire(Op::Keyed(Keyed::Store {
                kind: Storage::Cas,
                key: k.clone(),
                flags: 7,
                exptime: 0,
                data: Bytes::from_static(b"ab"),
                cas: 99
            })),
            b"cas k 7 0 2 99\r\nab\r\n"
        );
        assert_eq!(
            wire(Op::Keyed(Keyed::Arith {
                incr: false,
                key: k.clone(),
                delta: u64::MAX
            })),
            b"decr k 18446744073709551615\r\n"
        );
        assert_eq!(
            wire(Op::Keyed(Keyed::CopyRead { key: k })),
            b"mg k v f t\r\n"
        );
        assert_eq!(wire(Op::FlushAll { delay: None }), b"flush_all\r\n");
        assert_eq!(
            wire(Op::CacheMemlimit { megabytes: 64 }),
            b"cache_memlimit 64\r\n"
        );
    }
}
