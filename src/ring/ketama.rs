//! twemproxy's ketama continuum (`src/hashkit/nc_ketama.c`, `ketama_update` and
//! `ketama_dispatch`), reproduced so that every key lands on the same server as under
//! twemproxy 0.5.

use md5::{Digest, Md5};

/// `KETAMA_POINTS_PER_SERVER`: points of an average-weight server (40 MD5 digests × 4).
pub const POINTS_PER_SERVER: u32 = 160;

/// `KETAMA_MAX_HOSTLEN`: twemproxy formats `"<name>-<i>"` with `snprintf` into a buffer this
/// large, so longer strings are cut to `KETAMA_MAX_HOSTLEN - 1` bytes before hashing.
const MAX_HOSTLEN: usize = 273;

/// Points given to a server of `weight` among `nlive` live servers of total weight `total`.
///
/// This is twemproxy's expression, with C's types at every step:
/// ```c
/// pct = (float)server->weight / (float)total_weight;
/// (uint32_t) ((floorf((float) (pct * 160 / 4 * (float)nlive_server + 0.0000000001))) * 4)
/// ```
/// `pct * 160 / 4 * n` is evaluated in `float` (f32), `+ 1e-10` promotes to `double`, the sum is
/// rounded back to `float` and floored. In f32, 1/25 × 40 × 25 is 39.999996, so equal weights
/// give 156 points when n is 25, 50 or 100; doing the arithmetic in f64 would give 160 and move
/// keys.
pub fn points_for(weight: u32, total: u64, nlive: u32) -> u32 {
    let pct = weight as f32 / total as f32;
    let per_four = pct * POINTS_PER_SERVER as f32 / 4.0 * nlive as f32;
    let nudged = (f64::from(per_four) + 0.0000000001) as f32;
    (nudged.floor() * 4.0) as u32
}

/// The four points of digest `i` of a server: little-endian u32s of `MD5("<name>-<i>")`
/// (`ketama_hash` with alignment 0..3).
pub fn points_of(name: &str, i: u32) -> [u32; 4] {
    let mut host = format!("{name}-{i}").into_bytes();
    host.truncate(MAX_HOSTLEN - 1);
    let d = Md5::digest(&host);
    std::array::from_fn(|a| {
        u32::from_le_bytes([d[4 * a], d[4 * a + 1], d[4 * a + 2], d[4 * a + 3]])
    })
}

/// The sorted continuum: `(point, server)` pairs.
///
/// `servers` yields `(server, name, weight)` for the **live** servers in ring order (shorter
/// name first, then bytewise: twemproxy sorts its server array with `string_compare` when it
/// validates the config, and `ketama_update` walks that array).
pub fn continuum(servers: &[(u32, &str, u32)]) -> Vec<(u32, u32)> {
    let nlive = servers.len() as u32;
    // twemproxy sums in a uint32_t; a u64 gives the same f32 for every total that fits, and
    // keeps pct ≤ 1 (so at most 160 × n points) if a config ever overflowed it.
    let total: u64 = servers.iter().map(|s| u64::from(s.2)).sum();
    let mut points = Vec::with_capacity(servers.len() * POINTS_PER_SERVER as usize);
    for &(server, name, weight) in servers {
        for i in 0..points_for(weight, total, nlive) / 4 {
            points.extend(points_of(name, i).map(|p| (p, server)));
        }
    }
    // twemproxy uses qsort on the value only; glibc's qsort is a stable merge sort for arrays
    // this size (Debian 12, glibc 2.36), so equal values keep ring order. `sort_by_key` is
    // stable too.
    points.sort_by_key(|&(p, _)| p);
    points
}

/// `ketama_dispatch`: the server of the first point ≥ `hash`, wrapping to the first point.
/// `points` must be non-empty and sorted.
#[inline]
pub fn dispatch(points: &[(u32, u32)], hash: u32) -> u32 {
    let i = points.partition_point(|&(p, _)| p < hash);
    points.get(i).unwrap_or(&points[0]).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_points_match_design_reference() {
        assert_eq!(
            points_of("127.0.0.1:11212", 0),
            [0x269dd019, 0xcbdea72d, 0x05ba8950, 0xf8e26127]
        );
    }

    #[test]
    fn equal_weights_give_160_points_except_where_f32_rounds_down() {
        for n in [1, 2, 3, 4, 5, 10, 20, 30, 64] {
            assert_eq!(points_for(1, n.into(), n), 160, "n = {n}");
        }
        for n in [25, 50, 100] {
            assert_eq!(points_for(1, n.into(), n), 156, "n = {n}");
            assert_eq!(points_for(7, 7 * u64::from(n), n), 156, "n = {n}, weight 7");
        }
    }

    #[test]
    fn weights_split_points_proportionally() {
        // server1/2/3 with weights 1/2/3: pct × 40 × 3 = 20, 40, 60 digests.
        assert_eq!(points_for(1, 6, 3), 80);
        assert_eq!(points_for(2, 6, 3), 160);
        assert_eq!(points_for(3, 6, 3), 240);
    }

    #[test]
    fn dispatch_takes_first_point_at_or_above_hash_and_wraps() {
        let points = [(10, 0), (20, 1), (30, 2)];
        assert_eq!(dispatch(&points, 0), 0);
        assert_eq!(dispatch(&points, 10), 0);
        assert_eq!(dispatch(&points, 11), 1);
        assert_eq!(dispatch(&points, 30), 2);
        assert_eq!(dispatch(&points, 31), 0);
        assert_eq!(dispatch(&points, u32::MAX), 0);
    }

    #[test]
    fn long_names_are_truncated_like_snprintf() {
        let long = "x".repeat(300);
        let cut = &long[..MAX_HOSTLEN - 1];
        let d = Md5::digest(cut.as_bytes());
        assert_eq!(
            points_of(&long, 5)[0],
            u32::from_le_bytes([d[0], d[1], d[2], d[3]])
        );
    }

    #[test]
    fn continuum_is_sorted_and_sized_by_weight() {
        let c = continuum(&[(0, "a", 1), (1, "b", 1)]);
        assert_eq!(c.len(), 320);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(c.iter().filter(|p| p.1 == 1).count(), 160);
    }
}
