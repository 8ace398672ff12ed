use std::time::Duration;

use super::*;
use crate::metrics::Metrics;
use crate::protocol::command::Keyed;

/// A server that accepts connections (the kernel's backlog does) and never answers: a frozen
/// memcached. Marked down after one timeout; then, while it is probed, client requests fail
/// fast and only the prober's own requests are written: a probe is one request, not all.
#[tokio::test]
async fn a_probe_is_one_request_and_clients_fail_fast_meanwhile() {
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = ServerSettings {
        timeout: Duration::from_millis(50),
        retry_timeout: Duration::from_millis(100),
        ..ServerSettings::test(&frozen.local_addr().unwrap().to_string())
    };
    let metrics = Metrics::new().backend.server("s");
    let server = Server::start(Arc::new(settings), metrics.clone(), None);
    let delete = || {
        Op::Keyed(Keyed::Delete {
            key: Bytes::from_static(b"k"),
        })
    };
    let e = server.call(Lane::default(), delete()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(server.health.is_down(), "{:?}", server.health.state());
    assert_eq!(metrics.up.get(), 0);
    // While it stays frozen it is probed once per timeout + retry_timeout (150 ms); every
    // client request meanwhile is refused without being written.
    let start = Instant::now();
    for _ in 0..60 {
        match server.send(Lane::default(), delete()) {
            Err(e) if e.kind == ErrorKind::Down && e.retry_safe() => {}
            other => panic!("a client request got through: {:?}", other.err()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let probes_due = start.elapsed().as_millis() as u64 / 150 + 1;
    let written = metrics.requests.get();
    assert!(
        (1..=1 + probes_due).contains(&written),
        "1 client request and at most {probes_due} probes written, not {written}"
    );
    assert!(server.health.is_down());
    assert_eq!(metrics.up.get(), 0);
}
