//! Number parsing with memcached's exact rules (`safe_strtoul`, `safe_strtol`, `safe_strtoull` in
//! memcached's util.c), so that the proxy accepts and rejects the same tokens memcached does.

/// C `isspace` in the C locale (memcached's `xisspace`): what `strtol` skips before a number and
/// what memcached accepts right after one.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Parses like C `strtoll`/`strtoull` base 10 as memcached checks it: optional leading white
/// space, optional sign, at least one digit, then either the end of the token or a white-space
/// character (`\t`, `\v`, `\f`, `\r`, …) or a NUL — memcached's `safe_strto*` test
/// `xisspace(*endptr) || *endptr == '\0'`, and ignore whatever follows that character
/// (`touch k 10\tjunk` touches with exptime 10 on memcached 1.6.18). Returns the value with the
/// sign applied as i128 so callers can apply memcached's own range rules; `None` on junk or
/// overflow of 64 bits.
fn strto(token: &[u8]) -> Option<(i128, bool)> {
    let token = match token.iter().position(|&b| !is_c_space(b)) {
        Some(start) => &token[start..],
        None => return None,
    };
    let (negative, unsigned) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, token),
    };
    let end = unsigned
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(unsigned.len());
    let (digits, after) = unsigned.split_at(end);
    if digits.is_empty() {
        return None;
    }
    // `strtol` stops at the first non-digit; memcached accepts the number only if that is white
    // space or the end of the string (a NUL ends a C string, so `10\0x` is 10 too).
    if let Some(&next) = after.first() {
        if !is_c_space(next) && next != 0 {
            return None;
        }
    }
    let mut value: i128 = 0;
    for &d in digits {
        value = value * 10 + i128::from(d - b'0');
        if value > i128::from(u64::MAX) {
            return None; // ERANGE
        }
    }
    Some((if negative { -value } else { value }, negative))
}

/// memcached's `safe_strtoull`: an unsigned 64-bit number; a `-` sign is only rejected when the
/// wrapped value would look negative as a signed number (C `strtoull` negates in unsigned).
pub fn parse_u64(token: &[u8]) -> Option<u64> {
    let (v, negative) = strto(token)?;
    if !negative {
        return Some(v as u64);
    }
    // strtoull negates in unsigned arithmetic: "-5" is 2^64 - 5, which memcached then rejects
    // because it is negative as a signed number; "-0" stays 0 and is accepted.
    let wrapped = 0u64.wrapping_sub((-v) as u64);
    if (wrapped as i64) < 0 {
        return None;
    }
    Some(wrapped)
}

/// memcached's `safe_strtoul` for a `uint32_t` (flags, verbosity), except that values above
/// 2^32 - 1 are refused: memcached silently keeps them modulo 2^32 (flags `4294967301` become 5),
/// which a proxy forwarding numbers should not copy.
pub fn parse_u32(token: &[u8]) -> Option<u32> {
    parse_u64(token).and_then(|v| u32::try_from(v).ok())
}

/// memcached's `safe_strtol` for an `int32_t` (exptime, value length), except that values outside
/// the 32-bit range are refused: memcached truncates them (a `bytes` of `4294967297` reads as 1,
/// `99999999999` as 1.2 GB), which would make the proxy and the client disagree on where the data
/// block ends.
pub fn parse_i32(token: &[u8]) -> Option<i32> {
    let (v, _) = strto(token)?;
    i32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_memcached() {
        assert_eq!(parse_u32(b"12"), Some(12));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b"1x"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_i32(b"-1"), Some(-1));
        assert_eq!(parse_i32(b"4294967297"), None);
        assert_eq!(parse_i32(b"2147483648"), None);
        assert_eq!(parse_i32(b"-2147483648"), Some(i32::MIN));
        assert_eq!(parse_i32(b"99999999999999999999"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"+5"), Some(5));
        assert_eq!(parse_u64(b"abc"), None);
    }

    #[test]
    fn white_space_or_nul_after_the_digits_ends_the_number_as_in_memcached() {
        // Observed on memcached 1.6.18 (tests/MEMCACHED_NOTES.md §3): `isspace(*endptr)` or
        // `*endptr == '\0'` accepts the number and ignores the rest of the token. Anything else
        // right after the digits is junk (`None`); no digits at all is junk.
        for (token, want) in [
            (&b"10\t"[..], Some(10u8)),
            (b"10\x0b", Some(10)),
            (b"10\x0c", Some(10)),
            (b"10\r", Some(10)),
            (b"10\n", Some(10)),
            (b"10\tjunk", Some(10)),
            (b"10\x002", Some(10)),
            (b"\t10", Some(10)),
            (b"\t10\t", Some(10)),
            (b"+10\t", Some(10)),
            (b"10x", None),
            (b"10\x85", None),
            (b"10\xa0", None),
            (b"1.5\t", None),
            (b"\t", None),
            (b"-\t", None),
            (b"\t-", None),
            (b"0x10", None),
        ] {
            assert_eq!(parse_i32(token), want.map(i32::from), "{token:?}");
            assert_eq!(parse_u32(token), want.map(u32::from), "{token:?}");
            assert_eq!(parse_u64(token), want.map(u64::from), "{token:?}");
        }
        assert_eq!(parse_i32(b"-10\t"), Some(-10));
        // An overflow stays an overflow whatever follows it.
        assert_eq!(parse_u64(b"18446744073709551616\t"), None);
        assert_eq!(parse_i32(b"2147483648\t"), None);
    }
}
