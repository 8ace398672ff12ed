//! The live state: the current config [`Snapshot`] behind an `ArcSwap`, and what outlives
//! snapshots (metrics, backend servers shared across reloads, process start time).
//!
//! A reload builds a whole new snapshot off the request path and stores it atomically. Requests
//! load the snapshot once when they are dispatched and finish on it, so a reload never drops or
//! splits a request. Servers present in both versions keep their connections (looked up in the
//! [`Shared`] server table); servers that left are dropped with the last snapshot that uses
//! them, and their connections drain and close.

pub mod connections;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use crate::route::tiers::replay::Replay;
use crate::route::tiers::reshard::{self, MAX_PREVIOUS_RINGS, PreviousRing};

use arc_swap::ArcSwap;

use crate::backend::ServerSettings;
use crate::backend::{Pool, Pools, Server};
use crate::config::reload::ReloadOutcome;
use crate::config::{Config, ListenAddress, LowerOnWrite, RouteConfig};
use crate::metrics::Metrics;
use crate::protocol::exptime::unix_now;
use crate::route::{Route, Router};
use connections::Connections;

/// One immutable version of the running configuration.
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// Pools by name.
    pub pools: Pools,
    /// Routes by prefix.
    pub router: Router,
    /// Listeners with their own `pool`: a router with one default route to it.
    pub listener_routers: HashMap<ListenAddress, Router>,
    /// When this snapshot was loaded.
    pub loaded_at: SystemTime,
    /// A hash of the config text it came from (hex), shown by `/config`.
    pub source_hash: String,
    /// 0 for the first snapshot, one more for each reload: sessions tell snapshots apart by it.
    pub generation: u64,
    /// The acceptors of the TLS listeners, by address: new client connections handshake with
    /// the one of their listener.
    pub listen_tls: HashMap<crate::config::ListenAddress, Arc<crate::tls::Acceptor>>,
}

/// State shared by every task for the life of the process.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The running servers by their settings: a reload reuses those whose settings it keeps.
    servers: Mutex<HashMap<Arc<ServerSettings>, Weak<Server>>>,
    /// TLS acceptors and connectors, kept across reloads that keep their settings.
    tls: crate::tls::Registry,
    /// The generation of the last snapshot built.
    generation: AtomicU64,
    /// Process start, for `stats uptime`.
    pub started: Instant,
    /// Set once the client listener is bound (for `/readyz`).
    pub listening: AtomicBool,
    /// Set when shutdown begins (for `/readyz`).
    pub draining: AtomicBool,
    /// Listening sockets and client connections, for `stats conns`.
    pub connections: Connections,
    /// The generation of the last applied reload, for the listeners to follow.
    reloaded: tokio::sync::watch::Sender<u64>,
    /// Failed lower-tier deletes waiting to be sent again: one queue per process, kept across
    /// reloads.
    pub replay: Arc<Replay>,
    /// Open reshard windows: each resized pool's previous rings, newest first. Held while a
    /// snapshot is built and stored, so reloads and window ends never interleave.
    previous: Mutex<Previous>,
    /// This, for the tasks that close reshard windows.
    me: Weak<Shared>,
}

/// Previous rings by pool name.
type Previous = BTreeMap<String, Vec<PreviousRing>>;

impl Shared {
    /// Builds the first snapshot. Must run inside the tokio runtime (it opens connections).
    pub fn new(config: Config, source_hash: String, metrics: Arc<Metrics>) -> Arc<Shared> {
        let servers = Mutex::new(HashMap::new());
        let tls = crate::tls::Registry::new();
        let replay = Arc::new(Replay::new(&metrics));
        let state = State {
            metrics: &metrics,
            servers: &servers,
            tls: &tls,
            replay: &replay,
        };
        let snapshot = build(config, source_hash, 0, &state, &Previous::new());
        metrics.reload.last_success.set(unix_now());
        metrics
            .client
            .connections_max
            .set(snapshot.config.listen.max_connections as i64);
        Arc::new_cyclic(|me| Shared {
            replay,
            previous: Mutex::default(),
            me: me.clone(),
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            servers,
            tls,
            generation: AtomicU64::new(0),
            started: Instant::now(),
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            connections: Connections::default(),
            reloaded: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The current snapshot (an owned handle, for code that keeps it).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot for the duration of one dispatch: cheaper than [`Shared::snapshot`]
    /// (no reference count traffic on the shared `Arc` in the common case).
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Swaps in a new config. In-flight requests keep the snapshot they started with. A pool
    /// whose ring changed keeps its previous ring for `reshard_warmup` (see
    /// [`crate::route::tiers::reshard`]).
    pub fn apply(&self, config: Config, source_hash: String) {
        let mut previous = lock(&self.previous);
        let old = self.current.load_full();
        let before = servers_of(&old, &previous);
        let opened = open_windows(&mut previous, &old, &config);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = build(config, source_hash, generation, &self.state(), &previous);
        self.install(snapshot, &before, &previous);
        drop(previous);
        let new = self.current.load();
        // Listeners follow: added ones are bound, removed ones stop and drain.
        self.reloaded.send_replace(generation);
        if old.config.admin != new.config.admin {
            tracing::warn!(
                "admin address change needs a restart; the admin server keeps its address"
            );
        }
        self.metrics.reload.applied.inc();
        self.metrics.reload.last_success.set(unix_now());
        self.metrics.reload.last_ok.set(1);
        self.metrics
            .client
            .connections_max
            .set(new.config.listen.max_connections as i64);
        for (pool, ring) in opened {
            let warmup = new.config.pools.get(&pool).map(|p| p.reshard_warmup);
            tracing::info!(pool = %pool, warmup = ?warmup, previous = ?addresses(&ring.pool), "reshard window opened: keys that moved are read through from the previous ring");
            self.close_at(ring.until);
        }
    }

    /// Stores `snapshot`, forgets the servers no snapshot uses any more (in `before`, not in
    /// the new one or its previous rings) and shows the previous rings held.
    fn install(&self, snapshot: Snapshot, before: &HashSet<String>, previous: &Previous) {
        let in_use = servers_of(&snapshot, previous);
        for name in snapshot.config.pools.keys() {
            let held = previous.get(name).map_or(0, Vec::len);
            self.metrics
                .tiers
                .reshard_rings
                .with_label_values(&[name])
                .set(held as i64);
        }
        let old = self.current.swap(Arc::new(snapshot));
        for name in old.config.pools.keys() {
            if !self.current.load().config.pools.contains_key(name) {
                let _ = self
                    .metrics
                    .tiers
                    .reshard_rings
                    .remove_label_values(&[name]);
            }
        }
        for address in before.difference(&in_use) {
            self.metrics.backend.forget_server(address);
            tracing::info!(server = %address, "server removed; draining its connections");
        }
        // A removed server is never reused, even while requests still hold it: its series are
        // gone from the registry, and a later config that lists it again must start a server
        // with fresh handles (reusing the old one left it counting into detached series).
        lock(&self.servers)
            .retain(|settings, w| w.strong_count() > 0 && in_use.contains(&settings.address));
    }

    /// Closes the reshard windows that end at `until` (a task sleeps until then).
    fn close_at(&self, until: Instant) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            if let Some(shared) = me.upgrade() {
                shared.close_windows();
            }
        });
    }

    /// Drops the previous rings whose window has ended and stores a snapshot without them
    /// (same config); servers only they used are closed once no request holds them.
    fn close_windows(&self) {
        let mut previous = lock(&self.previous);
        let old = self.current.load_full();
        let before = servers_of(&old, &previous);
        let now = Instant::now();
        let mut closed = false;
        for (pool, rings) in previous.iter_mut() {
            rings.retain(|r| {
                let open = r.until > now;
                if !open {
                    tracing::info!(pool = %pool, previous = ?addresses(&r.pool), "reshard window closed: the previous ring is no longer asked");
                    closed = true;
                }
                open
            });
        }
        previous.retain(|_, rings| !rings.is_empty());
        if !closed {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = build(
            (*old.config).clone(),
            old.source_hash.clone(),
            generation,
            &self.state(),
            &previous,
        );
        self.install(snapshot, &before, &previous);
    }

    fn state(&self) -> State<'_> {
        State {
            metrics: &self.metrics,
            servers: &self.servers,
            tls: &self.tls,
            replay: &self.replay,
        }
    }

    /// Counts what a reload attempt did ([`Shared::apply`] counts the applied ones).
    pub fn record_reload(&self, outcome: &ReloadOutcome) {
        let m = &self.metrics.reload;
        match outcome {
            ReloadOutcome::Rejected(_) => {
                m.rejected.inc();
                m.last_ok.set(0);
            }
            // The file holds the running text again (a rejected edit was reverted): what is
            // on disk runs, so the failure is over and alerts on it must clear.
            ReloadOutcome::Unchanged if m.last_ok.get() == 0 => {
                m.last_ok.set(1);
                m.last_success.set(unix_now());
                tracing::info!("config file is the running config again");
            }
            ReloadOutcome::Unchanged | ReloadOutcome::Applied { .. } => {}
        }
    }

    /// Changes after every applied reload ([`crate::server::listener::supervise`] follows it).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// Whether the listener is bound and not draining.
    pub fn is_serving(&self) -> bool {
        self.listening.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}

/// What snapshots are built from besides the config.
struct State<'a> {
    metrics: &'a Arc<Metrics>,
    servers: &'a Mutex<HashMap<Arc<ServerSettings>, Weak<Server>>>,
    tls: &'a crate::tls::Registry,
    replay: &'a Arc<Replay>,
}

/// Updates the reshard windows for a reload from `old` to `config`: a pool whose ring changed
/// gets the previous ring in front of its list (at most [`MAX_PREVIOUS_RINGS`], oldest dropped);
/// ended windows, rings the pool is back to, pools that are gone and pools with
/// `reshard_warmup = "0s"` lose theirs. Returns the windows opened.
fn open_windows(
    previous: &mut Previous,
    old: &Snapshot,
    config: &Config,
) -> Vec<(String, PreviousRing)> {
    let now = Instant::now();
    let mut opened = Vec::new();
    previous.retain(|name, _| config.pools.contains_key(name));
    for (name, new) in &config.pools {
        let rings = previous.entry(name.clone()).or_default();
        rings.retain(|r| r.until > now);
        if let Some(before) = old.pools.get(name) {
            if reshard::ring_changed(&before.config, new)
                && reshard::reshardable(&before.config, new)
            {
                let ring = PreviousRing {
                    pool: before.clone(),
                    until: now + new.reshard_warmup,
                };
                rings.insert(0, ring.clone());
                opened.push((name.clone(), ring));
            }
        }
        if new.reshard_warmup.is_zero() {
            rings.clear();
        }
        rings.retain(|r| reshard::ring_changed(&r.pool.config, new));
        rings.truncate(MAX_PREVIOUS_RINGS);
    }
    previous.retain(|_, rings| !rings.is_empty());
    opened
}

/// Addresses of the servers a snapshot and the previous rings use.
fn servers_of(snapshot: &Snapshot, previous: &Previous) -> HashSet<String> {
    snapshot
        .pools
        .values()
        .chain(previous.values().flatten().map(|r| &r.pool))
        .flat_map(|p| p.servers.iter().map(|s| s.address().to_string()))
        .collect()
}

fn addresses(pool: &Pool) -> Vec<&str> {
    pool.servers.iter().map(|s| s.address()).collect()
}

/// A poisoned lock still guards valid data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pools of `config`, each with its servers: a server whose settings did not change is the
/// running one (its connections stay), any other is started.
fn start_pools(
    config: &Config,
    metrics: &Metrics,
    servers: &Mutex<HashMap<Arc<ServerSettings>, Weak<Server>>>,
    tls: &crate::tls::Registry,
) -> Pools {
    let mut table = lock(servers);
    let mut pools = BTreeMap::new();
    for (name, pc) in &config.pools {
        let connector = pc.tls.as_ref().map(|t| tls.backend(t));
        let pool_servers = pc
            .servers
            .iter()
            .map(|sc| {
                let settings = ServerSettings::new(pc, sc, config.listen.max_value_size);
                if let Some(s) = table.get(&settings).and_then(Weak::upgrade) {
                    return s;
                }
                let settings = Arc::new(settings);
                let s = Arc::new(Server::start(
                    settings.clone(),
                    metrics.backend.server(&sc.address),
                    connector.clone(),
                ));
                table.insert(settings, Arc::downgrade(&s));
                s
            })
            .collect();
        pools.insert(name.clone(), Arc::new(Pool::new(pc.clone(), pool_servers)));
    }
    pools
}

fn build(
    config: Config,
    source_hash: String,
    generation: u64,
    state: &State<'_>,
    previous: &Previous,
) -> Snapshot {
    let State {
        metrics,
        servers,
        tls,
        replay,
    } = *state;
    let listen_tls = config
        .listeners
        .iter()
        .filter_map(|l| Some((l.address.clone(), tls.listen(l.tls.as_ref()?))))
        .collect();
    let pools = start_pools(&config, metrics, servers, tls);
    // Each route gets the process's replay queue and the previous rings of its pools.
    let bind = |route: Route| {
        let mut route = route.with_previous(
            |name| previous.get(name).map_or(&[][..], Vec::as_slice),
            metrics,
        );
        route.replay = replay.clone();
        Arc::new(route)
    };
    let routes = config
        .routes
        .iter()
        .filter_map(|rc| Route::new(rc, &pools, metrics).map(bind))
        .collect();
    let listener_routers = config
        .listeners
        .iter()
        .filter_map(|l| {
            let pool = l.pool.as_ref()?;
            // Plain routing to one pool: one tier, so none of the tier machinery runs.
            let rc = RouteConfig {
                prefix: String::new(),
                tiers: vec![pool.clone()],
                warm: false,
                warm_ttl: None,
                lower_on_write: LowerOnWrite::Ignore,
                tombstone_ttl: crate::config::DEFAULT_TOMBSTONE_TTL,
                ..RouteConfig::default()
            };
            let route = Route::new(&rc, &pools, metrics).map(bind)?;
            Some((l.address.clone(), Router::new(vec![route])))
        })
        .collect();
    Snapshot {
        config: Arc::new(config),
        pools,
        router: Router::new(routes),
        listener_routers,
        loaded_at: SystemTime::now(),
        source_hash,
        generation,
        listen_tls,
    }
}

impl Snapshot {
    /// The routes of a listener: its own pool's, or the `[[routes]]`.
    pub fn router_for(&self, listener: &ListenAddress) -> &Router {
        self.listener_routers.get(listener).unwrap_or(&self.router)
    }
}
