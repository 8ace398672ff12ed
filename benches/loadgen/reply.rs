//! Checking replies. The keyspace is fixed (key `i` always holds [`workload::value`]`(i)` with
//! flags `i`), so every reply is known in advance: a `get` answer is parsed structurally (to
//! know where it ends) and each `VALUE` block is compared byte for byte with what was stored,
//! keys in the order asked. Anything else is an error, counted; a reply that cannot even be
//! framed ends the connection (there is no way to resynchronise).

use crate::workload;

/// Every key's wire forms, built once.
pub struct Keyspace {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    /// `set <key> <flags> 0 <size>\r\n<value>\r\n`
    sets: Vec<Vec<u8>>,
}

impl Keyspace {
    /// Keys `0..n` with `size`-byte values.
    pub fn new(n: u32, size: usize) -> Keyspace {
        let mut ks = Keyspace {
            keys: Vec::with_capacity(n as usize),
            values: Vec::with_capacity(n as usize),
            sets: Vec::with_capacity(n as usize),
        };
        for i in 0..n {
            let key = workload::key(i);
            let value = workload::value(i, size);
            let mut set = format!("set {key} {} 0 {size}\r\n", workload::flags(i)).into_bytes();
            set.extend_from_slice(&value);
            set.extend_from_slice(b"\r\n");
            ks.keys.push(key.into_bytes());
            ks.values.push(value);
            ks.sets.push(set);
        }
        ks
    }

    /// Key `i`.
    pub fn key(&self, i: u32) -> &[u8] {
        &self.keys[i as usize]
    }

    /// The whole `set` request for key `i`.
    pub fn set_request(&self, i: u32) -> &[u8] {
        &self.sets[i as usize]
    }
}

/// The reply a request expects.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// `set` → `STORED`.
    Stored,
    /// `delete` → `DELETED` or `NOT_FOUND`.
    Deleted,
    /// `get` of `asked[from..to]`: their `VALUE`s in that order (misses left out), then `END`.
    Values {
        /// First key's index in the batch's key list.
        from: usize,
        /// One past the last.
        to: usize,
    },
}

/// The outcome of reading one reply off the front of the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The reply took `len` bytes.
    Done {
        /// Bytes to consume.
        len: usize,
        /// Values returned (for `get`).
        hits: u32,
        /// `Some` if the reply was wrong (error line, wrong bytes).
        error: Option<String>,
    },
    /// The bytes do not frame as a reply to this request.
    Desync(String),
}

/// Reads the reply to `expect` at the front of `buf`.
pub fn check(buf: &[u8], expect: Expect, asked: &[u32], ks: &Keyspace) -> Parsed {
    let (line, next) = match next_line(buf, 0) {
        Ok(Some(l)) => l,
        Ok(None) => return Parsed::Incomplete,
        Err(e) => return Parsed::Desync(e),
    };
    if is_error_line(line) {
        return done(next, 0, Some(show(line)));
    }
    match expect {
        Expect::Stored => match line {
            b"STORED" => done(next, 0, None),
            _ => done(next, 0, Some(format!("set answered {}", show(line)))),
        },
        Expect::Deleted => match line {
            b"DELETED" | b"NOT_FOUND" => done(next, 0, None),
            _ => done(next, 0, Some(format!("delete answered {}", show(line)))),
        },
        Expect::Values { from, to } => values(buf, &asked[from..to], ks),
    }
}

fn values(buf: &[u8], asked: &[u32], ks: &Keyspace) -> Parsed {
    let mut pos = 0;
    let mut cursor = 0; // next key of `asked` a VALUE may be for
    let mut hits = 0;
    let mut error = None;
    loop {
        let (line, next) = match next_line(buf, pos) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Desync(e),
        };
        if line == b"END" {
            return done(next, hits, error);
        }
        if is_error_line(line) && pos == 0 {
            return done(next, 0, Some(show(line)));
        }
        let Some(header) = line.strip_prefix(b"VALUE ") else {
            return Parsed::Desync(format!("expected VALUE or END, got {}", show(line)));
        };
        let mut fields = header.split(|&b| b == b' ');
        let (Some(key), Some(flags), Some(size)) = (fields.next(), fields.next(), fields.next())
        else {
            return Parsed::Desync(format!("bad VALUE line {}", show(line)));
        };
        let Some(size) = number(size) else {
            return Parsed::Desync(format!("bad VALUE size in {}", show(line)));
        };
        let end = next + size as usize + 2;
        if buf.len() < end {
            return Parsed::Incomplete;
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Parsed::Desync("data block not followed by \\r\\n".into());
        }
        let data = &buf[next..end - 2];
        // Misses are left out, so this VALUE is for the first still-unanswered key that matches.
        match asked[cursor..].iter().position(|&i| ks.key(i) == key) {
            None => {
                error.get_or_insert_with(|| format!("unexpected VALUE {}", show(line)));
            }
            Some(skip) => {
                let i = asked[cursor + skip];
                cursor += skip + 1;
                if number(flags) != Some(u64::from(workload::flags(i))) {
                    error.get_or_insert_with(|| format!("wrong flags in {}", show(line)));
                } else if data != ks.values[i as usize].as_slice() {
                    error.get_or_insert_with(|| format!("wrong data for {}", show(key)));
                } else {
                    hits += 1;
                }
            }
        }
        pos = end;
    }
}

fn done(len: usize, hits: u32, error: Option<String>) -> Parsed {
    Parsed::Done { len, hits, error }
}

/// The line starting at `from` (without `\r\n`) and where the next one starts.
fn next_line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let Some(nl) = buf[from..].iter().position(|&b| b == b'\n') else {
        if buf.len() - from > 4096 {
            return Err("no line end in 4 KiB".into());
        }
        return Ok(None);
    };
    let end = from + nl;
    if end == from || buf[end - 1] != b'\r' {
        return Err("line ends with \\n, not \\r\\n".into());
    }
    Ok(Some((&buf[from..end - 1], end + 1)))
}

fn is_error_line(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"SERVER_ERROR") || line.starts_with(b"CLIENT_ERROR")
}

fn number(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}

/// Checked once per worker start (a `harness = false` bench has no test runner).
pub fn self_check() {
    let ks = Keyspace::new(20, 100);
    let asked = [3u32, 7, 9];
    let mut hit = Vec::new();
    for &i in &asked[..2] {
        hit.extend_from_slice(format!("VALUE bench:{i} {i} 100\r\n").as_bytes());
        hit.extend_from_slice(&workload::value(i, 100));
        hit.extend_from_slice(b"\r\n");
    }
    hit.extend_from_slice(b"END\r\n");
    let all = Expect::Values { from: 0, to: 3 };
    match check(&hit, all, &asked, &ks) {
        Parsed::Done {
            len,
            hits: 2,
            error: None,
        } if len == hit.len() => {}
        other => panic!("reply check: {other:?}"),
    }
    assert!(matches!(
        check(&hit[..hit.len() - 1], all, &asked, &ks),
        Parsed::Incomplete
    ));
    let mut wrong = hit.clone();
    wrong[30] ^= 1; // inside the first data block
    assert!(matches!(
        check(&wrong, all, &asked, &ks),
        Parsed::Done { error: Some(_), .. }
    ));
    assert!(matches!(
        check(b"SERVER_ERROR timeout\r\n", Expect::Stored, &[], &ks),
        Parsed::Done { error: Some(_), .. }
    ));
    assert!(matches!(
        check(b"STORED\r\nEND", Expect::Stored, &[], &ks),
        Parsed::Done {
            len: 8,
            error: None,
            ..
        }
    ));
}
