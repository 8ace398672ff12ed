//! twemproxy's key hash functions (skeleton).

/// A key hash function, named as in twemproxy's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashFn {
    /// FNV-1a with a 64-bit name but twemproxy's 32-bit arithmetic (default).
    #[default]
    Fnv1a64,
    /// Little-endian u32 of the first four MD5 bytes.
    Md5,
}

impl HashFn {
    /// Hashes `key`.
    pub fn hash(self, _key: &[u8]) -> u32 {
        0
    }
}

impl std::str::FromStr for HashFn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fnv1a_64" => Ok(HashFn::Fnv1a64),
            "md5" => Ok(HashFn::Md5),
            _ => Err(format!("unknown hash {s:?}")),
        }
    }
}
