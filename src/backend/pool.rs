//! A pool: named servers, the hash, and the ring that maps keys to them.
//!
//! With `eject = true` a server marked down leaves the ring and its keys move to the others
//! (twemproxy's `auto_eject_hosts`); the ring is rebuilt when health changes (a server marked
//! down, or up again after its probe answered: [`super::health`]). With `eject = false` the ring
//! never changes and a down server's keys fail fast.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::health::health_changes;
use super::{BackendError, ErrorKind, Origin, Server};
use crate::config::PoolConfig;
use crate::ring::{Ring, RingServer, hash_key};

/// A config snapshot's pools by name.
pub type Pools = std::collections::BTreeMap<String, Arc<Pool>>;

/// One pool of a config snapshot.
pub struct Pool {
    /// The validated config of this pool.
    pub config: PoolConfig,
    /// Servers in config order (ring indices point here).
    pub servers: Vec<Arc<Server>>,
    /// The ring with every server.
    ring: Ring,
    /// `eject = true` only: the ring without down servers.
    live: Option<LiveRing>,
}

struct LiveRing {
    current: ArcSwap<LiveState>,
    rebuild: Mutex<()>,
}

struct LiveState {
    health_changes: u64,
    /// Which servers this ring leaves out.
    ejected: Vec<bool>,
    ring: Ring,
}

impl Pool {
    /// Builds the pool's ring over already started servers (same order as `config.servers`).
    pub fn new(config: PoolConfig, servers: Vec<Arc<Server>>) -> Pool {
        let ring = build_ring(&config, &servers, false).ring;
        let live = config.eject.then(|| LiveRing {
            current: ArcSwap::from_pointee(build_ring(&config, &servers, true)),
            rebuild: Mutex::new(()),
        });
        Pool {
            config,
            servers,
            ring,
            live,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Index (in `servers`) of the server that owns `key`.
    pub fn locate_index(&self, key: &[u8]) -> Result<usize, BackendError> {
        let hash = if self.servers.len() == 1 {
            0
        } else {
            hash_key(self.config.hash, self.config.hash_tag, key)
        };
        let found = match &self.live {
            None => self.ring.locate(hash),
            Some(live) => self.live_ring(live).ring.locate(hash),
        };
        found.ok_or_else(|| BackendError::new(ErrorKind::NoServer, Origin::Routing))
    }

    /// The server that owns `key`.
    pub fn locate(&self, key: &[u8]) -> Result<&Arc<Server>, BackendError> {
        // The ring only holds indices of `servers`: `get` fails only on a broken ring.
        self.servers
            .get(self.locate_index(key)?)
            .ok_or_else(|| BackendError::new(ErrorKind::NoServer, Origin::Routing))
    }

    fn live_ring(&self, live: &LiveRing) -> arc_swap::Guard<Arc<LiveState>> {
        let state = live.current.load();
        if state.health_changes == health_changes() {
            return state;
        }
        let _guard = live.rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let before = live.current.load_full();
        let next = build_ring(&self.config, &self.servers, true);
        for (i, s) in self.servers.iter().enumerate() {
            if next.ejected[i] && !before.ejected[i] {
                s.metrics.ejections.inc();
                tracing::warn!(pool = %self.config.name, server = %s.address(), "server ejected from ring");
            } else if before.ejected[i] && !next.ejected[i] {
                tracing::info!(pool = %self.config.name, server = %s.address(), "server back in ring");
            }
        }
        live.current.store(Arc::new(next));
        live.current.load()
    }
}

/// The ring over `servers`; with `skip_down`, down servers get no points.
fn build_ring(config: &PoolConfig, servers: &[Arc<Server>], skip_down: bool) -> LiveState {
    let changes = health_changes();
    let mut ejected = Vec::with_capacity(servers.len());
    let ring_servers: Vec<RingServer<'_>> = config
        .servers
        .iter()
        .zip(servers)
        .map(|(c, s)| {
            // Down or being probed: a probe is one request, so the ring keeps it out until the
            // probe's answer marks it up (which counts as a health change).
            let down = skip_down && s.health.is_down();
            ejected.push(down);
            RingServer {
                name: &c.name,
                weight: c.weight,
                live: !down,
            }
        })
        .collect();
    let ring = Ring::build(config.distribution, &ring_servers);
    LiveState {
        health_changes: changes,
        ejected,
        ring,
    }
}
