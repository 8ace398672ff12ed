//! Key → server placement, bit-for-bit compatible with twemproxy 0.5.
//!
//! [`hash`] has twemproxy's key hash functions; [`ketama`] builds its continuum; [`modula`] and
//! random distribution are here too. A [`Ring`] is built once per pool (and again when a server is
//! ejected) and is immutable afterwards.

pub mod hash;
pub mod ketama;

pub use hash::HashFn;

/// How keys are spread over servers (twemproxy's `distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Consistent hashing with twemproxy's ketama continuum (default).
    #[default]
    Ketama,
    /// `hash % total_weight` over weight-many slots per server, in name order.
    Modula,
    /// A random live server per request.
    Random,
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ketama" => Ok(Distribution::Ketama),
            "modula" => Ok(Distribution::Modula),
            "random" => Ok(Distribution::Random),
            _ => Err(format!("unknown distribution {s:?} (expected ketama, modula or random)")),
        }
    }
}

/// A server as the ring sees it.
#[derive(Debug, Clone)]
pub struct RingServer<'a> {
    /// Ring name (see [`crate::config::ServerConfig::name`]).
    pub name: &'a str,
    /// Weight ≥ 1.
    pub weight: u32,
    /// False for an ejected server: it gets no points.
    pub live: bool,
}

/// An immutable placement table for one pool.
#[derive(Debug, Clone)]
pub struct Ring {
    // filled in by the ring implementation
}

impl Ring {
    /// Builds the table. Server indices returned by [`Ring::locate`] are positions in `servers`.
    pub fn build(_distribution: Distribution, _servers: &[RingServer<'_>]) -> Ring {
        Ring {}
    }

    /// The server index for a key hash, or `None` when no server is live.
    pub fn locate(&self, _hash: u32) -> Option<usize> {
        Some(0)
    }
}

/// Hashes `key` as twemproxy does, honouring `hash_tag` (e.g. `{}`).
pub fn hash_key(hash: HashFn, hash_tag: Option<[u8; 2]>, key: &[u8]) -> u32 {
    let key = match hash_tag {
        Some([open, close]) => tagged_part(key, open, close).unwrap_or(key),
        None => key,
    };
    hash.hash(key)
}

/// The bytes between the first `open` and the next `close`, if non-empty.
fn tagged_part(key: &[u8], open: u8, close: u8) -> Option<&[u8]> {
    let start = key.iter().position(|&b| b == open)? + 1;
    let len = key[start..].iter().position(|&b| b == close)?;
    (len > 0).then(|| &key[start..start + len])
}
