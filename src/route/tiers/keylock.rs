//! Per-key exclusion between copy-ups and deletes inside one memroute process.
//!
//! A copy reads the item from a lower tier (`mg`) and then writes it into tier 0 (`add`). A
//! `delete` that runs between those two steps removes the key from every tier, and the `add`
//! that follows puts the old value back: a `get` (which copies in the background) followed by
//! `delete` and `get` on one connection would answer `DELETED` and then the deleted value.
//! So copies of a key hold it shared and deletes hold it exclusively: a delete waits for the
//! copies already running and removes what they wrote, and a copy that starts after a delete
//! finds nothing below. The delayed double delete still covers copies made by other processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The keys with a copy or a delete in progress (an entry lives only while someone holds it).
#[derive(Default)]
pub struct KeyLocks {
    map: Mutex<HashMap<Bytes, Arc<RwLock<()>>>>,
}

/// Holds one key, shared or exclusive, until dropped.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Bytes,
    lock: Option<Arc<RwLock<()>>>,
    held: Option<Held>,
}

enum Held {
    // Never read: holding the guard is the point.
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl KeyLocks {
    /// Waits until no delete of `key` is running, then holds it shared (for a copy).
    pub async fn shared(&self, key: &Bytes) -> KeyGuard<'_> {
        let mut guard = self.guard(key);
        let lock = guard.lock.clone().expect("set by guard()");
        guard.held = Some(Held::Shared(lock.read_owned().await));
        guard
    }

    /// Waits until no copy or delete of `key` is running, then holds it exclusively.
    pub async fn exclusive(&self, key: &Bytes) -> KeyGuard<'_> {
        let mut guard = self.guard(key);
        let lock = guard.lock.clone().expect("set by guard()");
        guard.held = Some(Held::Exclusive(lock.write_owned().await));
        guard
    }

    /// Number of keys currently held (for tests).
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The guard exists before the wait, so a wait cancelled by a departing client still
    /// cleans up its entry.
    fn guard(&self, key: &Bytes) -> KeyGuard<'_> {
        let lock = lock(&self.map).entry(key.clone()).or_default().clone();
        KeyGuard {
            locks: self,
            key: key.clone(),
            lock: Some(lock),
            held: None,
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.locks.map);
        self.held.take();
        self.lock.take();
        // Under the map's mutex no one can clone the entry meanwhile: a count of one means only
        // the map holds it.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// A poisoned map is still a valid map.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn delete_waits_for_running_copies_and_entries_are_removed() {
        let locks = KeyLocks::default();
        let key = Bytes::from_static(b"k");
        let copy = locks.shared(&key).await;
        let second_copy = locks.shared(&key).await;
        let delete = tokio::time::timeout(Duration::from_millis(20), locks.exclusive(&key));
        assert!(delete.await.is_err(), "delete must wait for the copies");
        drop((copy, second_copy));
        let delete = locks.exclusive(&key).await;
        let copy = tokio::time::timeout(Duration::from_millis(20), locks.shared(&key));
        assert!(copy.await.is_err(), "a copy must wait for the delete");
        // Other keys are independent.
        let _other = locks.exclusive(&Bytes::from_static(b"other")).await;
        drop(delete);
        drop(_other);
        assert!(locks.is_empty(), "no entry outlives its guards");
    }
}
