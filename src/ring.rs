//! Key → server placement, bit-for-bit compatible with twemproxy 0.5.
//!
//! [`hash`] has twemproxy's key hash functions; [`ketama`] builds its continuum; [`modula`] and
//! random distribution are here too. A [`Ring`] is built once per pool (and again when a server is
//! ejected) and is immutable afterwards.

pub mod hash;
pub mod ketama;
pub mod modula;

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
            _ => Err(format!(
                "unknown distribution {s:?} (expected ketama, modula or random)"
            )),
        }
    }
}

impl Distribution {
    /// The name used in configuration files (the inverse of [`str::parse`]).
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
///
/// Cheap to share (`Send + Sync`), built off the hot path; [`Ring::locate`] never allocates.
#[derive(Debug, Clone)]
pub struct Ring {
    table: Table,
}

/// What `locate` consults; server numbers are indices into the slice given to [`Ring::build`].
#[derive(Debug, Clone)]
enum Table {
    /// No live server.
    Empty,
    /// One live server takes every key, whatever the distribution (twemproxy skips hashing for a
    /// one-server pool; its ring with one live server also maps every hash there).
    Single(u32),
    /// Sorted `(point, server)` continuum.
    Ketama(Box<[(u32, u32)]>),
    Modula(modula::Modula),
    /// Live servers in ring order; one is drawn per request.
    Random(Box<[u32]>),
}

impl Ring {
    /// Builds the table. Server indices returned by [`Ring::locate`] are positions in `servers`.
    ///
    /// Only live servers take part: dead ones get no points and do not count in the number of
    /// servers or the total weight (twemproxy's `nlive_server`, `total_weight`).
    pub fn build(distribution: Distribution, servers: &[RingServer<'_>]) -> Ring {
        let live = ring_order(servers);
        let table = match (live.as_slice(), distribution) {
            ([], _) => Table::Empty,
            ([only], _) => Table::Single(*only),
            (live, Distribution::Ketama) => {
                let named: Vec<_> = live
                    .iter()
                    .map(|&i| (i, servers[i as usize].name, servers[i as usize].weight))
                    .collect();
                Table::Ketama(ketama::continuum(&named).into_boxed_slice())
            }
            (live, Distribution::Modula) => Table::Modula(modula::Modula::new(
                live.iter().map(|&i| (i, servers[i as usize].weight)),
            )),
            (live, Distribution::Random) => Table::Random(live.into()),
        };
        Ring { table }
    }

    /// The server index for a key hash, or `None` when no server is live.
    ///
    /// With [`Distribution::Random`] the hash is ignored and a live server is drawn uniformly:
    /// twemproxy's `random_update` gives each live server one slot regardless of weight, and
    /// `random_dispatch` takes `random() % nlive`.
    #[inline]
    pub fn locate(&self, hash: u32) -> Option<usize> {
        let server = match &self.table {
            Table::Empty => return None,
            Table::Single(s) => *s,
            Table::Ketama(points) => ketama::dispatch(points, hash),
            Table::Modula(m) => m.dispatch(hash),
            Table::Random(live) => live[fastrand::usize(..live.len())],
        };
        Some(server as usize)
    }
}

/// Indices of the live servers in twemproxy's server order: shorter name first, then bytewise
/// (`conf_validate_server` sorts with `string_compare`, which compares lengths before
/// `strncmp`). The sort is stable, so duplicate names (which twemproxy rejects) keep config order.
/// A weight of 0 (twemproxy asserts `weight > 0`) counts as not live, so no table is ever empty
/// or divides by zero.
fn ring_order(servers: &[RingServer<'_>]) -> Vec<u32> {
    let mut live: Vec<u32> = (0..servers.len() as u32)
        .filter(|&i| servers[i as usize].live && servers[i as usize].weight > 0)
        .collect();
    live.sort_by_key(|&i| {
        let name = servers[i as usize].name.as_bytes();
        (name.len(), name)
    });
    live
}

/// Hashes `key` as twemproxy does, honouring `hash_tag` (e.g. `{}`).
///
/// Like `server_pool_idx`: with a tag, only the bytes between the first `open` and the next
/// `close` are hashed, when there is at least one; an empty key hashes to 0
/// (`server_pool_hash`), whatever the function.
pub fn hash_key(hash: HashFn, hash_tag: Option<[u8; 2]>, key: &[u8]) -> u32 {
    let key = match hash_tag {
        Some([open, close]) => tagged_part(key, open, close).unwrap_or(key),
        None => key,
    };
    if key.is_empty() {
        return 0;
    }
    hash.hash(key)
}

/// The bytes between the first `open` and the next `close`, if non-empty.
fn tagged_part(key: &[u8], open: u8, close: u8) -> Option<&[u8]> {
    let start = key.iter().position(|&b| b == open)? + 1;
    let len = key[start..].iter().position(|&b| b == close)?;
    (len > 0).then(|| &key[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers<'a>(names: &[&'a str], weights: &[u32]) -> Vec<RingServer<'a>> {
        let live = true;
        names
            .iter()
            .zip(weights)
            .map(|(&name, &weight)| RingServer { name, weight, live })
            .collect()
    }

    fn place(ring: &Ring, servers: &[RingServer<'_>], hash: HashFn, key: &str) -> String {
        let i = ring
            .locate(hash_key(hash, None, key.as_bytes()))
            .expect("a live server");
        servers[i].name.to_string()
    }

    const DESIGN_KEYS: [&str; 8] = [
        "foo",
        "bar",
        "baz",
        "user:1",
        "user:42",
        "session:abc",
        "key:0",
        "key:1",
    ];

    /// Server names, weights, hash function and the expected server (a suffix of its name) of
    /// each of [`DESIGN_KEYS`].
    type DesignRow = (
        &'static [&'static str],
        &'static [u32],
        HashFn,
        [&'static str; 8],
    );

    /// The three rows of DESIGN §2's placement table, read off twemproxy 0.5. The servers are
    /// given out of name order to check that the ring sorts them.
    #[test]
    fn design_placement_table() {
        let rows: [DesignRow; 3] = [
            (
                &["127.0.0.1:11214", "127.0.0.1:11212", "127.0.0.1:11213"],
                &[1, 1, 1],
                HashFn::Fnv1a64,
                [
                    ":11212", ":11214", ":11214", ":11214", ":11212", ":11214", ":11213", ":11213",
                ],
            ),
            (
                &["10.0.0.3", "10.0.0.1", "10.0.0.2"],
                &[1, 1, 1],
                HashFn::Md5,
                [".2", ".2", ".1", ".2", ".1", ".3", ".2", ".2"],
            ),
            (
                &["server3", "server1", "server2"],
                &[3, 1, 2],
                HashFn::Fnv1a64,
                [
                    "server2", "server2", "server2", "server3", "server3", "server3", "server3",
                    "server3",
                ],
            ),
        ];
        for (names, weights, hash, want) in rows {
            let s = servers(names, weights);
            let ring = Ring::build(Distribution::Ketama, &s);
            for (key, want) in DESIGN_KEYS.iter().zip(want) {
                let got = place(&ring, &s, hash, key);
                assert!(
                    got.ends_with(want),
                    "{names:?} {key}: got {got}, want …{want}"
                );
            }
        }
    }

    #[test]
    fn hash_tag_hashes_only_the_tagged_part() {
        let tag = Some(*b"{}");
        let h = |k: &[u8]| hash_key(HashFn::Fnv1a64, tag, k);
        assert_eq!(h(b"user{42}:name"), HashFn::Fnv1a64.hash(b"42"));
        assert_eq!(h(b"x{y}z{w}"), HashFn::Fnv1a64.hash(b"y"));
        // No close, or nothing between: the whole key.
        assert_eq!(h(b"a{b"), HashFn::Fnv1a64.hash(b"a{b"));
        assert_eq!(h(b"{}plain"), HashFn::Fnv1a64.hash(b"{}plain"));
        assert_eq!(
            hash_key(HashFn::Fnv1a64, None, b"user{42}"),
            HashFn::Fnv1a64.hash(b"user{42}")
        );
        // server_pool_hash: an empty key hashes to 0 whatever the function.
        assert_eq!(hash_key(HashFn::Fnv1a64, None, b""), 0);
    }

    #[test]
    fn dead_servers_take_no_part() {
        let mut s = servers(&["a", "b", "c"], &[1, 1, 1]);
        s[1].live = false;
        let without_b = servers(&["a", "c"], &[1, 1]);
        for dist in [Distribution::Ketama, Distribution::Modula] {
            let ring = Ring::build(dist, &s);
            let reference = Ring::build(dist, &without_b);
            for k in 0..200u32 {
                let h = HashFn::Md5.hash(&k.to_le_bytes());
                let got = ring.locate(h).map(|i| s[i].name);
                assert_eq!(got, reference.locate(h).map(|i| without_b[i].name));
            }
        }
        for s in s.iter_mut() {
            s.live = false;
        }
        for dist in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(Ring::build(dist, &s).locate(1), None);
        }
    }

    #[test]
    fn zero_weight_servers_get_nothing_and_never_panic() {
        let s = servers(&["a", "b", "c"], &[0, 0, 0]);
        for dist in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(Ring::build(dist, &s).locate(7), None);
        }
        let s = servers(&["a", "b", "c"], &[0, 2, 3]);
        let ring = Ring::build(Distribution::Modula, &s);
        assert!((0..100).all(|h| ring.locate(h) != Some(0)));
    }

    #[test]
    fn one_live_server_takes_every_key() {
        let mut s = servers(&["a", "b"], &[1, 5]);
        s[1].live = false;
        for dist in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            let ring = Ring::build(dist, &s);
            assert!([0, 1, u32::MAX].iter().all(|&h| ring.locate(h) == Some(0)));
        }
    }

    #[test]
    fn random_draws_live_servers_uniformly_ignoring_weight() {
        let mut s = servers(&["a", "b", "c", "d"], &[1, 100, 1, 1]);
        s[3].live = false;
        let ring = Ring::build(Distribution::Random, &s);
        let mut seen = [0u32; 4];
        for _ in 0..3000 {
            seen[ring.locate(0).unwrap()] += 1;
        }
        assert_eq!(seen[3], 0);
        // 1000 expected each; weight 100 must not matter (random_update: one slot per server).
        assert!(
            seen[..3].iter().all(|&n| (800..1200).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn ring_is_shareable() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<Ring>();
    }

    #[test]
    fn distribution_names_round_trip() {
        for d in [
            Distribution::Ketama,
            Distribution::Modula,
            Distribution::Random,
        ] {
            assert_eq!(d.name().parse::<Distribution>(), Ok(d));
        }
    }

    /// Every placement in `ring/golden/placement.txt`, read off a live Debian nutcracker 0.5 (see
    /// `ring/golden/README.md`): 12 hashes × {ketama, modula} × {equal, unequal weights}, the
    /// DESIGN rows, hash tags, 25 servers (156 points each) and an ejected server.
    #[test]
    fn golden_placements_from_nutcracker() {
        let text = include_str!("ring/golden/placement.txt");
        let mut pools = Vec::new();
        let mut checked = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mut f = line.split(' ');
            let first = f.next().unwrap();
            if first == "pool" {
                let (label, dist, hash, tag) = (
                    f.next().unwrap(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                );
                let servers: Vec<RingServer<'_>> = f
                    .map(|s| {
                        let mut p = s.split('=');
                        let name = p.next().unwrap();
                        let weight = p.next().unwrap().parse().unwrap();
                        RingServer {
                            name,
                            weight,
                            live: p.next() != Some("dead"),
                        }
                    })
                    .collect();
                let tag = (tag != "-").then(|| <[u8; 2]>::try_from(tag.as_bytes()).unwrap());
                let ring = Ring::build(dist.parse().unwrap(), &servers);
                pools.push((label, hash.parse::<HashFn>().unwrap(), tag, ring));
                continue;
            }
            let key = unescape(first);
            for ((label, hash, tag, ring), want) in pools.iter().zip(f) {
                let got = ring.locate(hash_key(*hash, *tag, &key));
                assert_eq!(
                    got,
                    Some(want.parse().unwrap()),
                    "pool {label}, key {first}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 55 * 83);
    }

    /// Undoes the `\xNN` escapes of the golden files.
    pub(super) fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = s.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'\\' {
                let hex = std::str::from_utf8(&tail[1..3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                rest = &tail[3..];
            } else {
                out.push(b);
                rest = tail;
            }
        }
        out
    }
}
