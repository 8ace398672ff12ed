//! Checking replies. The keyspace is fixed (key `i` always holds [`workload::value`]`(i)` with
//! flags `i`), so every reply is known in advance: a `get` answer is parsed structurally (to
//! know where it ends) and each `VALUE` block (or meta `VA` block) is compared byte for byte
//! with what was stored, keys in the order asked. Anything else is an error, counted; a reply that cannot even be
//! framed ends the connection (there is no way to resynchronise).

use crate::workload;

/// Every key's wire forms, built once.
pub struct Keyspace {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    /// `set <key> <flags> 0 <size>\r\n` (the value and `\r\n` follow).
    set_heads: Vec<Vec<u8>>,
    /// `ms <key> <size> F<flags>\r\n` (the value and `\r\n` follow).
    ms_heads: Vec<Vec<u8>>,
}

impl Keyspace {
    /// Keys `0..n` with `size`-byte values.
    pub fn new(n: u32, size: usize) -> Keyspace {
        let mut ks = Keyspace {
            keys: Vec::with_capacity(n as usize),
            values: Vec::with_capacity(n as usize),
            set_heads: Vec::with_capacity(n as usize),
            ms_heads: Vec::with_capacity(n as usize),
        };
        for i in 0..n {
            let key = workload::key(i);
            let flags = workload::flags(i);
            ks.set_heads
                .push(format!("set {key} {flags} 0 {size}\r\n").into_bytes());
            ks.ms_heads
                .push(format!("ms {key} {size} F{flags}\r\n").into_bytes());
            ks.keys.push(key.into_bytes());
            ks.values.push(workload::value(i, size));
        }
        ks
    }

    /// Key `i`.
    pub fn key(&self, i: u32) -> &[u8] {
        &self.keys[i as usize]
    }

    /// Appends the whole `set` request for key `i`.
    pub fn push_set(&self, i: u32, w: &mut Vec<u8>) {
        self.push_storage(&self.set_heads[i as usize], i, w);
    }

    /// Appends the whole meta `ms` request for key `i` (answered `HD`).
    pub fn push_ms(&self, i: u32, w: &mut Vec<u8>) {
        self.push_storage(&self.ms_heads[i as usize], i, w);
    }

    fn push_storage(&self, head: &[u8], i: u32, w: &mut Vec<u8>) {
        w.extend_from_slice(head);
        w.extend_from_slice(&self.values[i as usize]);
        w.extend_from_slice(b"\r\n");
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
    /// `ms` → `HD`.
    MetaStored,
    /// `mg <asked[at]> f v` → `VA <size> f<flags>` and the value, or `EN`.
    MetaValue {
        /// The key's index in the batch's key list.
        at: usize,
    },
    /// `mg <key> k f v q` for each of `asked[from..to]`, then `mn`: a `VA … k<key> …` block for
    /// each hit, in that order, then `MN`. An error line stands for one `mg` and does not end
    /// the batch.
    MetaQuiet {
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
    if let Expect::MetaQuiet { from, to } = expect {
        return meta_quiet(buf, &asked[from..to], ks);
    }
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
        Expect::MetaStored => match line {
            b"HD" => done(next, 0, None),
            _ => done(next, 0, Some(format!("ms answered {}", show(line)))),
        },
        Expect::MetaValue { at } => {
            if line == b"EN" {
                return done(next, 0, None);
            }
            let i = asked[at];
            match meta_value(buf, line, next) {
                Err(e) => Parsed::Desync(e),
                Ok(None) => Parsed::Incomplete,
                Ok(Some(va)) => {
                    let error = va.wrong_for(i, false, ks);
                    done(va.end, u32::from(error.is_none()), error)
                }
            }
        }
        Expect::MetaQuiet { .. } => unreachable!("handled above"),
    }
}

/// A meta `VA` block: what it says and where it ends.
struct MetaValue<'a> {
    /// The `k` flag's key, if returned.
    key: Option<&'a [u8]>,
    /// The `f` flag's client flags, if returned.
    flags: Option<u64>,
    data: &'a [u8],
    line: &'a [u8],
    /// Offset just past the data block's `\r\n`.
    end: usize,
}

impl MetaValue<'_> {
    /// What is wrong with this block as the answer for key `i` (`None`: nothing).
    fn wrong_for(&self, i: u32, want_key: bool, ks: &Keyspace) -> Option<String> {
        if want_key && self.key != Some(ks.key(i)) {
            Some(format!("VA for the wrong key: {}", show(self.line)))
        } else if self.flags != Some(u64::from(workload::flags(i))) {
            Some(format!("wrong flags in {}", show(self.line)))
        } else if self.data != ks.values[i as usize].as_slice() {
            Some(format!("wrong data for {}", show(ks.key(i))))
        } else {
            None
        }
    }
}

/// Parses the line `VA <size> <flags>*` and its data block, which starts at `next`;
/// `Ok(None)` if the data is not all there yet.
fn meta_value<'a>(
    buf: &'a [u8],
    line: &'a [u8],
    next: usize,
) -> Result<Option<MetaValue<'a>>, String> {
    let Some(rest) = line.strip_prefix(b"VA ") else {
        return Err(format!("expected VA, EN or MN, got {}", show(line)));
    };
    let mut tokens = rest.split(|&b| b == b' ');
    let size = tokens
        .next()
        .and_then(number)
        .ok_or_else(|| format!("bad VA size in {}", show(line)))?;
    let (mut key, mut flags) = (None, None);
    for t in tokens {
        match t.split_first() {
            Some((b'k', k)) => key = Some(k),
            Some((b'f', f)) => flags = number(f),
            _ => {}
        }
    }
    let end = next + size as usize + 2;
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return Err("data block not followed by \\r\\n".into());
    }
    Ok(Some(MetaValue {
        key,
        flags,
        data: &buf[next..end - 2],
        line,
        end,
    }))
}

/// The reply to a batch of quiet `mg`s ended by `mn`.
fn meta_quiet(buf: &[u8], asked: &[u32], ks: &Keyspace) -> Parsed {
    let mut pos = 0;
    let mut cursor = 0;
    let mut hits = 0;
    let mut error = None;
    loop {
        let (line, next) = match next_line(buf, pos) {
            Ok(Some(l)) => l,
            Ok(None) => return Parsed::Incomplete,
            Err(e) => return Parsed::Desync(e),
        };
        if line == b"MN" {
            return done(next, hits, error);
        }
        if is_error_line(line) || line == b"EN" {
            // One `mg` failed (or a miss was answered although quiet): the batch goes on.
            error.get_or_insert_with(|| format!("quiet mg answered {}", show(line)));
            pos = next;
            continue;
        }
        let va = match meta_value(buf, line, next) {
            Err(e) => return Parsed::Desync(e),
            Ok(None) => return Parsed::Incomplete,
            Ok(Some(va)) => va,
        };
        // Misses are silent, so this VA is for the first still-unanswered key it names.
        match asked[cursor..]
            .iter()
            .position(|&i| Some(ks.key(i)) == va.key)
        {
            None => {
                error.get_or_insert_with(|| format!("unexpected {}", show(line)));
            }
            Some(skip) => {
                let i = asked[cursor + skip];
                cursor += skip + 1;
                match va.wrong_for(i, true, ks) {
                    Some(e) => {
                        error.get_or_insert(e);
                    }
                    None => hits += 1,
                }
            }
        }
        pos = va.end;
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
    // Meta: a non-quiet hit, a miss, and a quiet batch with one miss and one wrong value.
    let mut va = format!("VA 100 f{}\r\n", 3).into_bytes();
    va.extend_from_slice(&workload::value(3, 100));
    va.extend_from_slice(b"\r\n");
    let one = Expect::MetaValue { at: 0 };
    assert!(matches!(
        check(&va, one, &asked, &ks),
        Parsed::Done { hits: 1, error: None, len } if len == va.len()
    ));
    assert!(matches!(
        check(&va[..va.len() - 3], one, &asked, &ks),
        Parsed::Incomplete
    ));
    assert!(matches!(
        check(&va, Expect::MetaValue { at: 1 }, &asked, &ks),
        Parsed::Done { error: Some(_), .. }
    ));
    assert!(matches!(
        check(b"EN\r\n", one, &asked, &ks),
        Parsed::Done {
            hits: 0,
            error: None,
            len: 4
        }
    ));
    let mut quiet = Vec::new();
    for &i in &asked[..2] {
        quiet.extend_from_slice(format!("VA 100 kbench:{i} f{i}\r\n").as_bytes());
        quiet.extend_from_slice(&workload::value(i, 100));
        quiet.extend_from_slice(b"\r\n");
    }
    quiet.extend_from_slice(b"MN\r\n");
    let batch = Expect::MetaQuiet { from: 0, to: 3 };
    assert!(matches!(
        check(&quiet, batch, &asked, &ks),
        Parsed::Done { hits: 2, error: None, len } if len == quiet.len()
    ));
    let mut wrong = quiet.clone();
    wrong[40] ^= 1;
    assert!(matches!(
        check(&wrong, batch, &asked, &ks),
        Parsed::Done {
            hits: 1,
            error: Some(_),
            ..
        }
    ));
    assert!(matches!(
        check(b"ERROR\r\nMN\r\n", batch, &asked, &ks),
        Parsed::Done {
            hits: 0,
            error: Some(_),
            len: 11
        }
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
