//! Number parsing with memcached's exact rules (`safe_strtoul`, `safe_strtol`, `safe_strtoull` in
//! memcached's util.c), so that the proxy accepts and rejects the same tokens memcached does.

/// Parses like C `strtoll`/`strtoull` base 10: optional leading white space, optional sign, at
/// least one digit, nothing after. Returns the value with the sign applied as i128 so callers can
/// apply memcached's own range rules; `None` on junk or overflow of 64 bits.
fn strto(token: &[u8]) -> Option<(i128, bool)> {
    let mut i = 0;
    while i < token.len() && matches!(token[i], b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < token.len() && (token[i] == b'+' || token[i] == b'-') {
        negative = token[i] == b'-';
        i += 1;
    }
    let digits = &token[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
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
}
