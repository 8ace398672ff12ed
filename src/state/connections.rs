//! The open client connections and listening sockets, for `stats conns`.
//!
//! memcached lists every connection it holds under its file descriptor: listening sockets with
//! `state conn_listening`, clients with their peer and the address they connected to. memroute
//! keeps the same list: the listener registers a client when it admits it, and the returned
//! [`Registered`] guard removes it however the session ends. One short lock per accept and per
//! close; nothing on the request path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What `stats conns` shows for one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `tcp:host:port` or `unix:/path`: the peer of a client, the bound address of a listener.
    pub addr: String,
    /// For a client, the listening address it connected to (one string shared by all its
    /// clients); `None` for a listener.
    pub listen_addr: Option<Arc<str>>,
}

/// Open sockets by (file descriptor, registration number). A descriptor is unique while its
/// socket is open, but a closed one is reused at once, possibly before the old entry's guard
/// drops: the number keeps that drop from removing the new entry.
type Open = Arc<Mutex<BTreeMap<(i32, u64), Entry>>>;

/// Every registered socket.
#[derive(Debug, Default)]
pub struct Connections {
    open: Open,
    next: AtomicU64,
}

/// Removes its entry when dropped.
#[derive(Debug)]
pub struct Registered {
    open: Open,
    key: (i32, u64),
}

impl Connections {
    /// Records `entry` under `fd` until the guard drops.
    pub fn register(&self, fd: i32, entry: Entry) -> Registered {
        let key = (fd, self.next.fetch_add(1, Ordering::Relaxed));
        lock(&self.open).insert(key, entry);
        Registered {
            open: self.open.clone(),
            key,
        }
    }

    /// The open sockets in descriptor order.
    pub fn list(&self) -> Vec<(i32, Entry)> {
        lock(&self.open)
            .iter()
            .map(|((fd, _), e)| (*fd, e.clone()))
            .collect()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.key);
    }
}

/// A panic while holding the lock leaves a consistent map (each operation is one call).
fn lock(m: &Mutex<BTreeMap<(i32, u64), Entry>>) -> MutexGuard<'_, BTreeMap<(i32, u64), Entry>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lives_as_long_as_its_guard() {
        let c = Connections::default();
        let e = Entry {
            addr: "tcp:127.0.0.1:5".into(),
            listen_addr: None,
        };
        let g = c.register(7, e.clone());
        assert_eq!(c.list(), vec![(7, e)]);
        // The descriptor is reused before the old guard drops: the new entry stays.
        let e2 = Entry {
            addr: "tcp:127.0.0.1:6".into(),
            listen_addr: None,
        };
        let g2 = c.register(7, e2.clone());
        drop(g);
        assert_eq!(c.list(), vec![(7, e2)]);
        drop(g2);
        assert!(c.list().is_empty());
    }
}
