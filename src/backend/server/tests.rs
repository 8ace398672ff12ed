use std::time::Duration;

use super::*;
use crate::backend::health::State;
use crate::metrics::Metrics;
use crate::protocol::command::Keyed;

/// A server that accepts connections (the kernel's backlog does) and never answers: a frozen
/// memcached. Marked down after one timeout; then, while it is probed, client requests fail
/// fast and only the prober's own requests are written: a probe is one request, not all.
#[tokio::test]
async fn a_probe_is_one_request_and_clients_fail_fast_meanwhile() {
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let key = ServerKey {
        address: frozen.local_addr().unwrap().to_string(),
        connections: 1,
        timeout: Duration::from_millis(50),
        failure_limit: 1,
        retry_timeout: Duration::from_millis(100),
        merge_gets: true,
        max_value_size: 1024,
        tls: None,
    };
    let metrics = Metrics::new().server("s");
    let server = Server::start(&key, metrics.clone(), None);
    let delete = || {
        Op::Keyed(Keyed::Delete {
            key: Bytes::from_static(b"k"),
        })
    };
    let e = server.call(0, delete()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert_eq!(server.health.state(), State::Down);
    assert_eq!(metrics.up.get(), 0);
    // 600 ms: about four probes (each a 50 ms timeout, then 100 ms down).
    let mut refused = 0;
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        match server.send(0, delete()) {
            Err(e) if e.kind == ErrorKind::Down && e.retry_safe() => refused += 1,
            other => panic!("a client request got through: {:?}", other.err()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused > 50, "{refused}");
    let written = metrics.requests.get();
    assert!(
        (2..=1 + 5).contains(&written),
        "1 client request and a few probes written, not {written}"
    );
    assert!(server.health.is_down());
    assert_eq!(metrics.up.get(), 0);
}
