//! A tiny HTTP/1.1 client for the admin server, and a reader of Prometheus text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a socket operation may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased: `("content-type", "text/plain")`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the answer to the end. Panics when the
/// server does not answer (see [`try_http`]).
#[track_caller]
pub fn http(port: u16, method: &str, path: &str) -> HttpReply {
    try_http(port, method, path).unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// As [`http`], with connection and read errors returned (e.g. a server that is shutting down).
pub fn try_http(port: u16, method: &str, path: &str) -> std::io::Result<HttpReply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::other(format!("not an HTTP answer: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// The value of the series `name` whose labels include every pair of `labels` (in any order),
/// in Prometheus text; `None` if there is no such series. Panics when several series match:
/// name more labels. (A counter with labels is absent until first counted: callers that mean
/// "not counted yet" write `.unwrap_or(0.0)`.)
#[track_caller]
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let mut found = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, got) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?.split(',').collect()),
                None => (series, Vec::new()),
            };
            let matches = n == name && want.iter().all(|w| got.contains(&w.as_str()));
            matches.then(|| (line, value.parse::<f64>().ok()))
        });
    let (line, value) = found.next()?;
    if let Some((other, _)) = found.next() {
        panic!("{name}{labels:?} is ambiguous: {line:?} and {other:?} (name more labels)");
    }
    Some(value.unwrap_or_else(|| panic!("not a number in {line:?}")))
}

/// A counter's value: [`sample`], with an absent series read as 0 (a labelled counter appears
/// only once first counted).
#[track_caller]
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}
