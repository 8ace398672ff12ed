//! memcached's exptime rules: a number up to 30 days is relative, a larger one is a Unix time.

use std::time::SystemTime;

/// memcached reads an exptime above 30 days as an absolute Unix time.
pub const RELATIVE_TTL_MAX: i64 = 30 * 24 * 3600;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The exptime that gives an item `ttl` more seconds (`-1`: never expires), written at `now`;
/// `None` when the item is about to expire and is not worth writing again.
pub fn for_remaining_ttl(ttl: i64, now: i64) -> Option<i32> {
    match ttl {
        -1 => Some(0),
        t if t <= 0 => None,
        t if t > RELATIVE_TTL_MAX => i32::try_from(now + t).ok(),
        t => Some(t as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ttl_becomes_an_exptime() {
        assert_eq!(for_remaining_ttl(-1, 1_000), Some(0));
        assert_eq!(for_remaining_ttl(0, 1_000), None);
        assert_eq!(for_remaining_ttl(100, 1_000), Some(100));
        assert_eq!(
            for_remaining_ttl(RELATIVE_TTL_MAX, 1_000),
            Some(RELATIVE_TTL_MAX as i32)
        );
        assert_eq!(
            for_remaining_ttl(RELATIVE_TTL_MAX + 1, 1_000),
            Some((1_000 + RELATIVE_TTL_MAX + 1) as i32)
        );
    }
}
