use std::time::Duration;

use super::*;
use crate::metrics::Metrics;

#[test]
fn backoff_doubles_up_to_a_second_and_starts_over_after_a_connection() {
    let mut b = Backoff::new();
    let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
    assert_eq!(delays, [20, 40, 80, 160, 320, 640, 1000, 1000]);
    b.reset();
    assert_eq!(b.next_delay(), Backoff::MIN);
}

/// A port nothing listens on: every connect is refused at once, so the attempts follow the
/// backoff exactly (paused clock), requests in between fail fast, and each refusal is a failure.
#[tokio::test(start_paused = true)]
async fn a_refused_server_is_retried_with_backoff_and_requests_fail_fast() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let metrics = Metrics::new().backend.server("s");
    let settings = Arc::new(ServerSettings {
        failure_limit: 1000,
        ..ServerSettings::test(&format!("127.0.0.1:{port}"))
    });
    let target = Target {
        settings: settings.clone(),
        health: Arc::new(Health::new(settings)),
        metrics: metrics.clone(),
        tls: None,
    };
    let tx = spawn(target);
    // Attempts at 0, 20, 60, 140 and 300 ms.
    tokio::time::sleep(Duration::from_millis(310)).await;
    assert_eq!(metrics.connect_errors.get(), 5);
    tokio::time::sleep(Duration::from_millis(320)).await;
    assert_eq!(metrics.connect_errors.get(), 6);
    // Between attempts a request fails at once, with nothing written.
    let (rtx, rrx) = oneshot::channel();
    let job = Job {
        op: Op::Keyed(crate::protocol::command::Keyed::Delete {
            key: bytes::Bytes::from_static(b"k"),
        }),
        tx: rtx,
        deadline: Instant::now() + Duration::from_secs(1),
    };
    tx.send(job).ok().unwrap();
    let before = Instant::now();
    let e = rrx.await.unwrap().unwrap_err();
    assert_eq!((e.kind, e.retry_safe()), (ErrorKind::Connect, true));
    assert_eq!(before.elapsed(), Duration::ZERO);
}
