//! A blocking memcached text-protocol client that asserts exact bytes, over TCP or any other
//! byte stream (tests/tls wraps a rustls stream in it).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long any single read may wait before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Shows bytes as an escaped string (`\r\n`, `\x00`), cut around `focus` when long, so a failed
/// 500 KB comparison prints the interesting part.
pub fn escape(bytes: &[u8], focus: usize) -> String {
    const SHOW: usize = 300;
    let (start, end) = if bytes.len() <= 2 * SHOW {
        (0, bytes.len())
    } else {
        let start = focus.saturating_sub(SHOW / 2).min(bytes.len());
        (start, (start + SHOW).min(bytes.len()))
    };
    let body: String = bytes[start..end].escape_ascii().to_string();
    format!(
        "{}\"{body}\"{} ({} bytes)",
        if start > 0 {
            format!("[{start} bytes]…")
        } else {
            String::new()
        },
        if end < bytes.len() {
            format!("…[{} more]", bytes.len() - end)
        } else {
            String::new()
        },
        bytes.len()
    )
}

/// One client connection (TCP unless `S` says otherwise). Reads go through a buffer so line and
/// exact-length reads mix.
pub struct Client<S = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `127.0.0.1:port` (read timeout 5 s, Nagle off).
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client::over(stream)
    }

    /// Everything that arrives until the connection has been quiet for `quiet` (or closed).
    pub fn read_available(&mut self, quiet: Duration) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(quiet))
            .expect("set timeout");
        let deadline = Instant::now() + READ_TIMEOUT;
        while Instant::now() < deadline {
            match self.fill() {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set timeout");
        std::mem::take(&mut self.buf)
    }

    /// Asserts nothing arrives within `wait`.
    #[track_caller]
    pub fn expect_nothing(&mut self, wait: Duration) {
        let got = self.read_available(wait);
        assert!(got.is_empty(), "expected no reply, got {}", escape(&got, 0));
    }
}

impl<S: Read + Write> Client<S> {
    /// A client over an open `stream` (whose reads time out, so a missing reply fails the test).
    pub fn over(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// The stream underneath.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// What was read but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Writes all of `bytes` in one call (the kernel may still split it).
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("write to server");
    }

    /// Writes all of `bytes` and flushes (a TLS stream buffers), returning the error.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// One read into the buffer: `Ok(0)` on EOF.
    pub fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads exactly `n` bytes, or panics saying what did arrive.
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let why = match self.fill() {
                Ok(0) => "connection closed".to_string(),
                Ok(_) => continue,
                Err(e) => format!("read error ({e})"),
            };
            panic!(
                "wanted {n} bytes, {why} after {}",
                escape(&self.buf, self.buf.len())
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`. Fails as soon as
    /// the bytes received so far differ, without waiting for the rest.
    #[track_caller]
    pub fn expect(&mut self, expected: &[u8]) {
        loop {
            let have = self.buf.len().min(expected.len());
            if self.buf[..have] != expected[..have] {
                let got: Vec<u8> = self.buf.drain(..have).collect();
                let at = mismatch_at(expected, &got);
                panic!(
                    "reply differs at byte {at}\n  expected: {}\n  actual:   {}",
                    escape(expected, at),
                    escape(&got, at)
                );
            }
            if have == expected.len() {
                self.buf.drain(..have);
                return;
            }
            let why = match self.fill() {
                Ok(n) if n > 0 => continue,
                Ok(_) => "connection closed".to_string(),
                Err(e) if is_timeout(&e) => format!("nothing more within {READ_TIMEOUT:?}"),
                Err(e) => format!("read error ({e})"),
            };
            panic!(
                "short reply, {why}\n  expected: {}\n  actual:   {}",
                escape(expected, self.buf.len()),
                escape(&self.buf, self.buf.len())
            );
        }
    }

    /// Reads one line, `\r\n` included.
    pub fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            match self.fill() {
                Ok(n) if n > 0 => {}
                res => panic!(
                    "no complete line ({res:?}); have {}",
                    escape(&self.buf, self.buf.len())
                ),
            }
        }
    }

    /// Sends `request` and asserts the reply is exactly `expected`.
    #[track_caller]
    pub fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        self.expect(expected);
    }

    /// [`Client::roundtrip`] for each `(request, expected reply)` row, in order.
    #[track_caller]
    pub fn roundtrips(&mut self, rows: &[(&[u8], &[u8])]) {
        for (i, (request, expected)) in rows.iter().enumerate() {
            eprintln!("row {i}: {}", request.escape_ascii());
            self.roundtrip(request, expected);
        }
    }

    /// Asserts the server closes the connection (EOF or reset) within the read timeout, with
    /// nothing more to read before that.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        loop {
            if !self.buf.is_empty() {
                panic!("expected close, got {}", escape(&self.buf, 0));
            }
            match self.fill() {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return;
                }
                Err(e) => panic!("expected the server to close the connection, but: {e}"),
            }
        }
    }

    /// `set key 0 0 len` with `value`, asserting `STORED`.
    #[track_caller]
    pub fn set(&mut self, key: &str, value: &[u8]) {
        let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        self.roundtrip(&req, b"STORED\r\n");
    }

    /// `stats`: every `STAT name value` line as `(name, value)`, asserting that form, up to
    /// `END`.
    #[track_caller]
    pub fn stats(&mut self) -> Vec<(String, String)> {
        self.send(b"stats\r\n");
        let mut stats = Vec::new();
        loop {
            let line = String::from_utf8(self.read_line()).expect("stats are ASCII");
            if line == "END\r\n" {
                return stats;
            }
            let fields: Vec<&str> = line.trim_end_matches("\r\n").splitn(3, ' ').collect();
            match fields[..] {
                ["STAT", name, value] if !value.is_empty() => {
                    stats.push((name.to_string(), value.to_string()));
                }
                _ => panic!("not a stats line: {line:?}"),
            }
        }
    }

    /// The number `STAT name` of `stats` (which must have it).
    #[track_caller]
    pub fn stat(&mut self, name: &str) -> u64 {
        let stats = self.stats();
        let value = stats.iter().find(|(n, _)| n == name);
        let value = value.unwrap_or_else(|| panic!("no {name} in stats: {stats:?}"));
        value.1.trim().parse().expect("a number")
    }

    /// The cas unique of `key` from `gets key` (which must hit).
    pub fn gets_cas(&mut self, key: &str) -> u64 {
        self.send(format!("gets {key}\r\n").as_bytes());
        let header = String::from_utf8(self.read_line()).expect("ascii header");
        let fields: Vec<&str> = header.trim_end().split(' ').collect();
        assert!(
            fields.len() == 5 && fields[0] == "VALUE",
            "not a gets hit: {header:?}"
        );
        let len: usize = fields[3].parse().expect("length");
        self.read_exact_bytes(len + 2);
        self.expect(b"END\r\n");
        fields[4].parse().expect("cas unique")
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Index of the first differing byte (or the shorter length).
fn mismatch_at(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Writes `request` on a new connection, half-closes it and reads until the server closes:
/// memcached and memroute both answer everything they read before closing.
pub fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    s.write_all(request.as_bytes()).expect("write request");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read replies");
    out
}
