//! twemproxy's twelve key hash functions (`src/hashkit/nc_*.c`), bit for bit.
//!
//! twemproxy reads keys through `const char *`, and `char` is signed on x86-64. Several functions
//! widen a key byte with `(uint32_t)key[x]`, which **sign-extends** bytes ≥ 0x80 to
//! `0xffffff80..`. Keys with such bytes would land elsewhere if we widened them as unsigned, so
//! [`sx`] reproduces the C conversion wherever twemproxy does it, and nowhere else.

use md5::{Digest, Md5};

/// A key hash function, named as in twemproxy's `hash:` setting.
///
/// All of them return 32 bits; the `_64` variants only differ from `_32` in their constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashFn {
    /// Bob Jenkins' one-at-a-time hash.
    OneAtATime,
    /// Little-endian u32 of the first four MD5 bytes.
    Md5,
    /// CRC-16/XMODEM, but accumulated in a u32 that is never masked (see [`crc16`]).
    Crc16,
    /// libmemcached's CRC-32 variant: bits 16..31 of the CRC, masked to 15 bits.
    Crc32,
    /// Standard CRC-32 (IEEE).
    Crc32a,
    /// FNV-1 with 64-bit constants, truncated to 32 bits.
    Fnv1_64,
    /// FNV-1a with a 64-bit name but twemproxy's 32-bit arithmetic (default).
    #[default]
    Fnv1a64,
    /// FNV-1, 32-bit.
    Fnv1_32,
    /// FNV-1a, 32-bit.
    Fnv1a32,
    /// Paul Hsieh's SuperFastHash.
    Hsieh,
    /// MurmurHash2 with twemproxy's length-derived seed.
    Murmur,
    /// Bob Jenkins' lookup3 `hashlittle` with initval 13.
    Jenkins,
}

impl HashFn {
    /// Every hash function, in the order of twemproxy's `HASH_CODEC` list.
    pub const ALL: [HashFn; 12] = [
        HashFn::OneAtATime,
        HashFn::Md5,
        HashFn::Crc16,
        HashFn::Crc32,
        HashFn::Crc32a,
        HashFn::Fnv1_64,
        HashFn::Fnv1a64,
        HashFn::Fnv1_32,
        HashFn::Fnv1a32,
        HashFn::Hsieh,
        HashFn::Murmur,
        HashFn::Jenkins,
    ];

    /// The name used in configuration files (the inverse of [`str::parse`]).
    pub fn name(self) -> &'static str {
        match self {
            HashFn::OneAtATime => "one_at_a_time",
            HashFn::Md5 => "md5",
            HashFn::Crc16 => "crc16",
            HashFn::Crc32 => "crc32",
            HashFn::Crc32a => "crc32a",
            HashFn::Fnv1_64 => "fnv1_64",
            HashFn::Fnv1a64 => "fnv1a_64",
            HashFn::Fnv1_32 => "fnv1_32",
            HashFn::Fnv1a32 => "fnv1a_32",
            HashFn::Hsieh => "hsieh",
            HashFn::Murmur => "murmur",
            HashFn::Jenkins => "jenkins",
        }
    }

    /// Hashes `key` exactly as twemproxy's `hash_<name>` does.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashFn::OneAtATime => one_at_a_time(key),
            HashFn::Md5 => md5(key),
            HashFn::Crc16 => crc16(key),
            // `crc32` returns `((~crc) >> 16) & 0x7fff` "compatible with libmemcached": only 15
            // bits, so on a ketama ring every key falls in the first 2^15 of the 2^32 points.
            HashFn::Crc32 => (crc32fast::hash(key) >> 16) & 0x7fff,
            HashFn::Crc32a => crc32fast::hash(key),
            HashFn::Fnv1_64 => fnv1_64(key),
            HashFn::Fnv1a64 => fnv1a_64(key),
            HashFn::Fnv1_32 => fnv1_32(key),
            HashFn::Fnv1a32 => fnv1a_32(key),
            HashFn::Hsieh => hsieh(key),
            HashFn::Murmur => murmur(key),
            HashFn::Jenkins => jenkins(key),
        }
    }
}

impl std::fmt::Display for HashFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HashFn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HashFn::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = HashFn::ALL.iter().map(|h| h.name()).collect();
                format!("unknown hash {s:?} (expected one of {})", names.join(", "))
            })
    }
}

/// C's `(uint32_t)key[x]` for a signed `char`: bytes ≥ 0x80 are sign-extended.
#[inline]
pub(super) fn sx(b: u8) -> u32 {
    b as i8 as i32 as u32
}

const FNV_64_INIT: u64 = 0xcbf29ce484222325;
const FNV_64_PRIME: u64 = 0x100000001b3;
const FNV_32_INIT: u32 = 2166136261;
const FNV_32_PRIME: u32 = 16777619;

/// `hash_fnv1_64`: full 64-bit FNV-1, XOR with the sign-extended byte, low 32 bits returned.
fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_64_PRIME);
        // `(uint64_t)key[x]`: sign-extends to 64 bits.
        h ^= b as i8 as i64 as u64;
    }
    h as u32
}

/// `hash_fnv1a_64`: despite the name, twemproxy truncates init and prime to 32 bits
/// (`0x84222325`, `0x1b3`), so this is not FNV-1a/64 and not FNV-1a/32 either.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_INIT as u32;
    for &b in key {
        h ^= sx(b);
        h = h.wrapping_mul(FNV_64_PRIME as u32);
    }
    h
}

/// `hash_fnv1_32`, with sign-extended bytes.
fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h = h.wrapping_mul(FNV_32_PRIME);
        h ^= sx(b);
    }
    h
}

/// `hash_fnv1a_32`, with sign-extended bytes.
fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_INIT;
    for &b in key {
        h ^= sx(b);
        h = h.wrapping_mul(FNV_32_PRIME);
    }
    h
}

/// `hash_one_at_a_time`, with sign-extended bytes.
fn one_at_a_time(key: &[u8]) -> u32 {
    let mut v: u32 = 0;
    for &b in key {
        v = v.wrapping_add(sx(b));
        v = v.wrapping_add(v << 10);
        v ^= v >> 6;
    }
    v = v.wrapping_add(v << 3);
    v ^= v >> 11;
    v.wrapping_add(v << 15)
}

/// `hash_md5`: the first four digest bytes, little-endian.
fn md5(key: &[u8]) -> u32 {
    let d = Md5::digest(key);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// CRC-16/XMODEM table (polynomial 0x1021), the same 256 entries as twemproxy's `crc16tab`.
const CRC16_TAB: [u16; 256] = {
    let mut tab = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tab[i] = crc;
        i += 1;
    }
    tab
};

/// `hash_crc16`: the accumulator is a `uint32_t` and `crc << 8` is never masked, so for keys of
/// three bytes or more the upper 16 bits hold earlier CRC bytes. The low 16 bits are a real
/// CRC-16/XMODEM. The table index masks with 0xff, so sign extension does not matter here.
fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in key {
        crc = (crc << 8) ^ u32::from(CRC16_TAB[(((crc >> 8) ^ u32::from(b)) & 0xff) as usize]);
    }
    crc
}

/// `hash_hsieh` (SuperFastHash). `get16bits` reads unsigned bytes on x86-64, but the 3-byte
/// tail does `(uint32_t)key[2] << 18` on a signed `char`: a high byte there sets bits 26..31.
fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let get16 = |d: &[u8]| u32::from(d[0]) | (u32::from(d[1]) << 8);
    let mut hash: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(get16(c));
        let tmp = (get16(&c[2..]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    let rest = chunks.remainder();
    match rest.len() {
        3 => {
            hash = hash.wrapping_add(get16(rest));
            hash ^= hash << 16;
            hash ^= sx(rest[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(get16(rest));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            // `(unsigned char)(*key)`: no sign extension in this branch.
            hash = hash.wrapping_add(u32::from(rest[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

/// `hash_murmur`: MurmurHash2 whose seed is `0xdeadbeef * len` (not a constant), bytes read
/// unsigned, words little-endian.
fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1e995;
    let len = key.len() as u32;
    let mut h = 0xdeadbeefu32.wrapping_mul(len) ^ len;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The C switch falls through 3 → 2 → 1; the multiply happens once, after byte 0.
        for (i, &b) in rest.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// `hash_jenkins`: lookup3 `hashlittle(key, len, 13)`. twemproxy picks an aligned-word,
/// half-word or byte path by the key's address; on little-endian machines all three give this
/// result, so the byte path (bytes unsigned) is enough.
fn jenkins(key: &[u8]) -> u32 {
    let init = 0xdeadbeefu32
        .wrapping_add(key.len() as u32)
        .wrapping_add(13);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |s: &[u8]| {
        // Missing tail bytes count as zero, like the masked reads of the C code.
        let mut w = [0u8; 4];
        w[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(w)
    };
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        (a, b, c) = jenkins_mix(a, b, c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        // "zero length strings require no mixing"
        return c;
    }
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]));
    }
    jenkins_final(a, b, c)
}

/// lookup3's `mix(a,b,c)`: six steps `x -= z; x ^= rot(z, k); z += y` with `(x, y, z)` going
/// `(a, b, c)`, `(b, c, a)`, `(c, a, b)`, twice.
fn jenkins_mix(a: u32, b: u32, c: u32) -> (u32, u32, u32) {
    let mut v = [a, b, c];
    for (step, k) in [4, 6, 8, 16, 19, 4].into_iter().enumerate() {
        let (x, y, z) = (step % 3, (step + 1) % 3, (step + 2) % 3);
        v[x] = v[x].wrapping_sub(v[z]) ^ v[z].rotate_left(k);
        v[z] = v[z].wrapping_add(v[y]);
    }
    (v[0], v[1], v[2])
}

/// lookup3's `final(a,b,c)`, returning `c`: seven steps `x ^= z; x -= rot(z, k)` with `(x, z)`
/// going `(c, b)`, `(a, c)`, `(b, a)`, …
fn jenkins_final(a: u32, b: u32, c: u32) -> u32 {
    let mut v = [a, b, c];
    for (step, k) in [14, 11, 25, 16, 4, 14, 24].into_iter().enumerate() {
        let (x, z) = ((step + 2) % 3, (step + 1) % 3);
        v[x] = (v[x] ^ v[z]).wrapping_sub(v[z].rotate_left(k));
    }
    v[2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str() {
        for h in HashFn::ALL {
            assert_eq!(h.name().parse::<HashFn>(), Ok(h));
        }
        assert!("fnv1a".parse::<HashFn>().is_err());
        assert_eq!(HashFn::default(), HashFn::Fnv1a64);
    }

    #[test]
    fn fnv1a_64_matches_design_reference_values() {
        assert_eq!(HashFn::Fnv1a64.hash(b"foo"), 0xfed9d577);
        assert_eq!(HashFn::Fnv1a64.hash(b"bar"), 0x1339461a);
        assert_eq!(HashFn::Fnv1a64.hash(b"user:1"), 0x75081ceb);
    }

    #[test]
    fn md5_matches_design_reference_value() {
        assert_eq!(HashFn::Md5.hash(b"foo"), 0xdb18bdac);
    }

    #[test]
    fn fnv1a_64_sign_extends_high_bytes() {
        // One byte 0x80: h = (0x84222325 ^ 0xffffff80) * 0x1b3, not (0x84222325 ^ 0x80) * 0x1b3.
        let signed = (0x84222325u32 ^ 0xffffff80).wrapping_mul(0x1b3);
        let unsigned = (0x84222325u32 ^ 0x80).wrapping_mul(0x1b3);
        assert_eq!(HashFn::Fnv1a64.hash(&[0x80]), signed);
        assert_ne!(signed, unsigned);
        // Bytes below 0x80 are unaffected.
        assert_eq!(
            HashFn::Fnv1a64.hash(&[0x7f]),
            (0x84222325u32 ^ 0x7f).wrapping_mul(0x1b3)
        );
    }

    #[test]
    fn crc16_table_is_twemproxys() {
        // First, second and last row of twemproxy's crc16tab.
        assert_eq!(CRC16_TAB[..4], [0x0000, 0x1021, 0x2042, 0x3063]);
        assert_eq!(CRC16_TAB[8..12], [0x8108, 0x9129, 0xa14a, 0xb16b]);
        assert_eq!(CRC16_TAB[252..], [0x2e93, 0x3eb2, 0x0ed1, 0x1ef0]);
    }

    #[test]
    fn crc16_keeps_upper_bits_and_low_half_is_xmodem() {
        // CRC-16/XMODEM("123456789") = 0x31c3 (the catalogue check value).
        let h = HashFn::Crc16.hash(b"123456789");
        assert_eq!(h & 0xffff, 0x31c3);
        assert_ne!(h >> 16, 0);
    }

    #[test]
    fn crc32_is_libmemcacheds_15_bit_variant() {
        // CRC-32("123456789") = 0xcbf43926 (catalogue check value).
        assert_eq!(HashFn::Crc32a.hash(b"123456789"), 0xcbf43926);
        assert_eq!(HashFn::Crc32.hash(b"123456789"), 0xcbf4 & 0x7fff);
    }

    /// Values printed by twemproxy's own `src/hashkit/nc_*.c`, compiled with gcc on x86-64
    /// (`golden/hashes.txt`, see `golden/README.md`). They cover the empty key, every tail
    /// length of the word-wise hashes and bytes ≥ 0x80.
    #[test]
    fn every_function_matches_twemproxys_c_code() {
        let text = include_str!("golden/hashes.txt");
        let mut order = Vec::new();
        let mut checked = 0;
        for line in text.lines() {
            if let Some(names) = line
                .strip_prefix("# ")
                .filter(|l| l.starts_with("one_at_a_time"))
            {
                order = names
                    .split(' ')
                    .map(|n| n.parse::<HashFn>().unwrap())
                    .collect();
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let mut f = line.split(' ');
            let key = match f.next().unwrap() {
                "\"\"" => Vec::new(),
                k => crate::ring::tests::unescape(k),
            };
            for (h, want) in order.iter().zip(f) {
                let want = u32::from_str_radix(want.trim_start_matches("0x"), 16).unwrap();
                assert_eq!(
                    h.hash(&key),
                    want,
                    "{h} {:?}",
                    key.escape_ascii().to_string()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 7 * HashFn::ALL.len());
        assert_eq!(order, HashFn::ALL);
    }
}
