//! `/readyz`: whether this proxy should get client traffic.
//!
//! Ready means: a config is loaded (always true once [`Shared`] exists: a bad file at start-up
//! stops the process), the client listener is bound and not draining, and every pool has at
//! least one server that is not marked down. A pool with every server down would answer all its
//! keys with `SERVER_ERROR`, so a load balancer should prefer another replica.
//!
//! "Marked down" is [`Health::is_down`](crate::backend::health::Health::is_down): down, or due
//! its probe and not yet answered (its keys still fail fast then). Recovery cannot deadlock: the
//! probe is sent by the server's own prober, not by client traffic, so a replica taken out of the
//! load balancer still sees its servers come back.

use std::sync::atomic::Ordering;

use crate::state::Shared;

/// `Ok` when ready, else the reason in one line.
pub fn check(shared: &Shared) -> Result<(), String> {
    if shared.draining.load(Ordering::Acquire) {
        return Err("not ready: shutting down".into());
    }
    if !shared.is_serving() {
        return Err("not ready: client listener not bound yet".into());
    }
    let snapshot = shared.snapshot();
    let dead: Vec<&str> = snapshot
        .pools
        .values()
        .filter(|pool| pool.servers.iter().all(|s| s.health.is_down()))
        .map(|pool| pool.name())
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    Err(format!(
        "not ready: every server is marked down in pool {}",
        dead.join(", pool ")
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Release;

    use super::check;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::state::Shared;

    #[tokio::test]
    async fn ready_only_while_listening_with_a_live_server_in_every_pool() {
        // Connections to a bound socket succeed (the kernel accepts them), so health stays up.
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "[pools.main]\nservers = [\"{}\"]\nfailure_limit = 1\n",
            backend.local_addr().unwrap()
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let shared = Shared::new(config, "hash".into(), Arc::new(Metrics::new()));
        assert_eq!(
            check(&shared),
            Err("not ready: client listener not bound yet".into())
        );
        shared.listening.store(true, Release);
        assert_eq!(check(&shared), Ok(()));

        let server = shared.snapshot().pools["main"].servers[0].clone();
        server.health.record_failure(&server.metrics);
        assert_eq!(
            check(&shared),
            Err("not ready: every server is marked down in pool main".into())
        );
        server.health.record_success(&server.metrics);
        assert_eq!(check(&shared), Ok(()));

        shared.draining.store(true, Release);
        assert_eq!(check(&shared), Err("not ready: shutting down".into()));
    }
}
