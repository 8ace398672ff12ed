//! Checks made before measuring, over plain blocking sockets: whether a target speaks the meta
//! protocol (memroute's meta support may not have landed; nutcracker has none), and whether
//! memcached's proxy places keys where memroute's ketama ring with `hash = "md5"` puts them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use memroute::ring::{self, Distribution, HashFn, Ring, RingServer};

fn connect(addr: &str) -> Result<(BufReader<TcpStream>, TcpStream), String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let w = s.try_clone().map_err(|e| e.to_string())?;
    Ok((BufReader::new(s), w))
}

fn line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(0) => Err("closed the connection".into()),
        Ok(_) => Ok(l.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(format!("no answer ({e})")),
    }
}

/// `Ok` if `mn` is answered `MN`; otherwise what the target did instead, for the table's note.
pub fn meta(addr: &str) -> Result<(), String> {
    let (mut r, mut w) = connect(addr)?;
    w.write_all(b"mn\r\n").map_err(|e| e.to_string())?;
    match line(&mut r)?.as_str() {
        "MN" => Ok(()),
        other => Err(format!("no meta protocol (answers {other:?} to mn)")),
    }
}

/// Sets `n` keys through the proxy at `proxy`, finds each on the `backends`, compares with
/// memroute's ring (ketama, md5, servers named by their address) and deletes them again.
/// `Ok`/`Err` carry the same one-line summary.
pub fn ring(proxy: &str, backends: &[String], n: u32) -> Result<String, String> {
    let keys: Vec<String> = (0..n).map(|i| format!("ringcheck:{i}")).collect();
    let (mut r, mut w) = connect(proxy)?;
    let mut req = Vec::new();
    for k in &keys {
        req.extend_from_slice(format!("set {k} 0 0 1\r\nx\r\n").as_bytes());
    }
    w.write_all(&req).map_err(|e| e.to_string())?;
    for k in &keys {
        let l = line(&mut r)?;
        if l != "STORED" {
            return Err(format!("set {k} through the proxy answered {l:?}"));
        }
    }
    // Where each key landed.
    let mut found: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    for (b, addr) in backends.iter().enumerate() {
        let (mut br, mut bw) = connect(addr)?;
        for (c, chunk) in keys.chunks(100).enumerate() {
            bw.write_all(format!("get {}\r\n", chunk.join(" ")).as_bytes())
                .map_err(|e| e.to_string())?;
            loop {
                let l = line(&mut br)?;
                if l == "END" {
                    break;
                }
                let key = l.split(' ').nth(1).unwrap_or_default();
                let Some(i) = chunk.iter().position(|k| k == key) else {
                    return Err(format!("{addr} answered {l:?}"));
                };
                found[c * 100 + i].push(b);
                line(&mut br)?; // the one-byte value
            }
        }
    }
    let names: Vec<RingServer<'_>> = backends
        .iter()
        .map(|name| RingServer {
            name,
            weight: 1,
            live: true,
        })
        .collect();
    let memroute = Ring::build(Distribution::Ketama, &names);
    let mut per = vec![0usize; backends.len()];
    let mut wrong = Vec::new();
    for (k, at) in keys.iter().zip(&found) {
        let want = memroute.locate(ring::hash_key(HashFn::Md5, None, k.as_bytes()));
        match at.as_slice() {
            [b] if Some(*b) == want => per[*b] += 1,
            _ => wrong.push(format!("{k} on {at:?}, ring says {want:?}")),
        }
    }
    let mut req = Vec::new();
    for k in &keys {
        req.extend_from_slice(format!("delete {k}\r\n").as_bytes());
    }
    w.write_all(&req).map_err(|e| e.to_string())?;
    for _ in &keys {
        line(&mut r)?;
    }
    let split: Vec<String> = per.iter().map(|c| c.to_string()).collect();
    let summary = format!(
        "{} of {n} keys set through it sit on the one server memroute's ketama ring (hash = md5) \
         names (split {})",
        n as usize - wrong.len(),
        split.join(" / ")
    );
    if wrong.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}; e.g. {}", wrong[0]))
    }
}
