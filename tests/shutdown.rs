//! Graceful shutdown (DESIGN §6, deploy/README.md "Stop"): the first SIGTERM or SIGINT turns
//! `/readyz` to 503 and closes the listener; every request a client had fully sent is answered
//! in full, then its connection is closed; the process exits 0 once every client is done, or when
//! the drain timeout ends the wait; a second signal exits at once.
//!
//! The [`Memroute`] handle of `tests/common` reads the exit status.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::process::all_threads_stopped;
use common::{Builder, Client, Memcached, Memroute, poll_for, try_http};

/// memroute's default drain timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of a drain timeout for the process to exit (a loaded CI machine).
const EXIT_SLACK: Duration = Duration::from_secs(10);
/// Concurrent clients in the load test.
const CLIENTS: usize = 50;
/// Each client stops after this many batches (or this long) even if nothing else stops it.
const MAX_BATCHES: usize = 20_000;
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

/// Whether `f` returns true within `limit` (polled).
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    poll_for(limit, || f().then_some(())).is_some()
}

/// memroute with an admin port and one pool `main` over `servers` (`extra` pool lines).
fn one_pool(servers: &[&Memcached], extra: &str) -> Builder {
    Memroute::builder()
        .admin()
        .pool_with("main", servers, extra)
}

/// What one load client wrote and got back.
struct Run {
    /// The replies memroute owes, concatenated, for every request written (fully or partly).
    expected: Vec<u8>,
    /// End offset in `expected` of each request's reply.
    ends: Vec<usize>,
    /// For each batch whose write returned: index of its last request, and when the write
    /// returned.
    sent: Vec<(usize, Instant)>,
    /// Everything read from the connection until it closed.
    received: Vec<u8>,
    /// How the connection ended.
    end: String,
}

/// One client: pipelined batches of `set`+`get` pairs on its own keys (so every reply is known
/// in advance), each batch in one write, then reads until the batch is answered. Stops when
/// the server closes the connection (or after `MAX_BATCHES` / `CLIENT_DEADLINE`).
fn load_client(port: u16, id: usize, batches_done: &AtomicUsize) -> Run {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut run = Run {
        expected: Vec::new(),
        ends: Vec::new(),
        sent: Vec::new(),
        received: Vec::new(),
        end: String::new(),
    };
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut chunk = vec![0u8; 64 * 1024];
    'batches: for batch in 0..MAX_BATCHES {
        if Instant::now() > deadline {
            run.end = "client deadline".into();
            break;
        }
        let mut bytes = Vec::new();
        for pair in 0..1 + batch % 4 {
            let key = format!("{}:shutdown:{id}", (batch * 4 + pair) % 16);
            let value = format!("{id}-{batch}-{pair}-").repeat(1 + (batch * 7 + pair) % 40);
            bytes.extend_from_slice(
                format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len()).as_bytes(),
            );
            run.expected.extend_from_slice(b"STORED\r\n");
            run.ends.push(run.expected.len());
            run.expected
                .extend_from_slice(&common::value_reply(&key, 0, value.as_bytes()));
            run.expected.extend_from_slice(b"END\r\n");
            run.ends.push(run.expected.len());
        }
        if let Err(e) = stream.write_all(&bytes) {
            run.end = format!("write failed: {e}");
            break;
        }
        run.sent.push((run.ends.len() - 1, Instant::now()));
        while run.received.len() < run.expected.len() {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    run.end = "closed by the server".into();
                    break 'batches;
                }
                Ok(n) => run.received.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    run.end = format!("read failed: {e}");
                    break 'batches;
                }
            }
        }
        batches_done.fetch_add(1, Ordering::Relaxed);
    }
    // Whatever is still on its way, until the server closes the connection.
    if run.end.starts_with("write failed") || run.end == "client deadline" {
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => run.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    run
}

/// The replies form a complete prefix: exactly the first `k` requests' replies, nothing cut,
/// and every request sent before `signal_at` is among them.
fn check_run(id: usize, run: &Run, signal_at: Instant) -> Result<usize, String> {
    let got = run.received.len();
    if got > run.expected.len() || run.received[..] != run.expected[..got] {
        let at = run
            .received
            .iter()
            .zip(&run.expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.min(run.expected.len()));
        return Err(format!(
            "client {id}: reply bytes differ at {at}: got {}",
            common::client::escape(&run.received, at)
        ));
    }
    let answered = match run.ends.iter().position(|&e| e == got) {
        Some(i) => i + 1,
        None if got == 0 => 0,
        None => {
            return Err(format!(
                "client {id}: a reply was cut off after {got} bytes ({})",
                run.end
            ));
        }
    };
    for &(last, at) in &run.sent {
        if at < signal_at && last >= answered {
            return Err(format!(
                "client {id}: request {last} was sent before the signal but only {answered} \
                 requests were answered ({})",
                run.end
            ));
        }
    }
    Ok(answered)
}

/// Runs `CLIENTS` load clients against memroute started by `setup`, sends SIGTERM while
/// they run, and checks the exit status and every client's replies.
fn sigterm_under_load(setup: Builder) {
    let mut memroute = setup.start();
    let port = memroute.port;

    let batches_done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let done = batches_done.clone();
            thread::spawn(move || load_client(port, id, &done))
        })
        .collect();
    // Let every client get going, then a little more.
    assert!(
        eventually(Duration::from_secs(20), || batches_done
            .load(Ordering::Relaxed)
            >= CLIENTS * 5),
        "clients made no progress"
    );
    thread::sleep(Duration::from_millis(200));

    let signal_at = Instant::now();
    memroute.signal("TERM");
    let status = memroute.wait_exit(DRAIN_TIMEOUT + EXIT_SLACK);
    let status = status.expect("memroute still runs after the drain timeout");
    assert!(status.success(), "exit status {status}");

    let (mut answered_total, mut sent_before_total) = (0, 0);
    let mut problems = Vec::new();
    for (id, client) in clients.into_iter().enumerate() {
        let run = client.join().expect("client thread");
        match check_run(id, &run, signal_at) {
            Ok(answered) => {
                answered_total += answered;
                sent_before_total += run
                    .sent
                    .iter()
                    .filter(|(_, at)| *at < signal_at)
                    .map(|(last, _)| last + 1)
                    .max()
                    .unwrap_or(0);
            }
            Err(problem) => problems.push(problem),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let log = memroute.stderr();
    assert!(log.contains("all clients drained"), "log:\n{log}");
    eprintln!(
        "{answered_total} requests answered, {sent_before_total} of them sent before the signal"
    );
}

#[test]
fn sigterm_answers_every_request_sent_before_it_and_exits_0() {
    let backends = [Memcached::start(), Memcached::start()];
    sigterm_under_load(one_pool(&[&backends[0], &backends[1]], ""));
}

/// memroute with an admin port and one route, tiers = ["new", "old"].
fn tiered(new: &Memcached, old: &Memcached) -> Builder {
    Memroute::builder()
        .admin()
        .pool("new", [new])
        .pool("old", [old])
        .route("", &["new", "old"])
}

/// On a tiered route every request is a barrier: later pipelined requests wait, parsed or not,
/// in the session while the signal comes.
#[test]
fn sigterm_answers_every_pipelined_request_on_a_tiered_route() {
    let new = Memcached::start();
    let old = Memcached::start();
    sigterm_under_load(tiered(&new, &old));
}

#[test]
fn readyz_turns_503_at_once_and_a_second_sigterm_exits_at_once() {
    let backend = Memcached::start();
    // A long backend timeout: the stuck request keeps the drain going.
    let mut memroute = one_pool(&[&backend], "timeout = \"60s\"").start();
    assert_eq!(memroute.get("/readyz").status, 200);
    let mut stuck = Client::connect(memroute.port);
    stuck.set("k", b"v");
    backend.pause();
    stuck.send(b"get k\r\n");

    let first = Instant::now();
    memroute.signal("TERM");
    assert!(
        eventually(Duration::from_secs(5), || try_http(
            memroute.admin(),
            "GET",
            "/readyz"
        )
        .is_ok_and(|r| r.status == 503 && r.body.contains("shutting down"))),
        "/readyz did not turn 503 while draining"
    );
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            memroute.port
        ))
        .is_err()),
        "the client listener still accepts while draining"
    );
    // The stuck request holds the drain open (it would for the whole drain timeout).
    thread::sleep(Duration::from_millis(300));
    assert!(memroute.try_status().is_none(), "exited before the drain");

    memroute.signal("TERM");
    let status = memroute.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "still running 5 s after the second SIGTERM"
    );
    assert!(
        first.elapsed() < DRAIN_TIMEOUT,
        "exit only came with the drain timeout"
    );
    let log = memroute.stderr();
    assert!(log.contains("second signal"), "log:\n{log}");
    stuck.expect_closed();
    backend.resume();
}

#[test]
fn drain_timeout_ends_a_session_blocked_on_a_client_that_does_not_read() {
    let backend = Memcached::start_with_args(&["-I", "2m"]);
    let mut memroute = one_pool(&[&backend], "")
        .args(&["--drain-timeout", "1s"])
        .start();
    let mut greedy = Client::connect(memroute.port);
    greedy.set("big", &vec![b'x'; 512 * 1024]);
    // 32 MiB of replies this client never reads: memroute blocks writing to it.
    greedy.send(&b"get big\r\n".repeat(64));
    thread::sleep(Duration::from_millis(300));

    memroute.signal("TERM");
    let status = memroute.wait_exit(Duration::from_secs(1) + EXIT_SLACK);
    let status = status.expect("still running long after the 1 s drain timeout");
    assert!(status.success(), "exit status {status}");
    let log = memroute.stderr();
    assert!(log.contains("drain timeout"), "log:\n{log}");
    drop(greedy);
}

#[test]
fn sigint_closes_idle_clients_and_exits_0() {
    let backend = Memcached::start();
    let mut memroute = one_pool(&[&backend], "").start();
    let mut idle = Client::connect(memroute.port);
    idle.roundtrip(
        b"version\r\n",
        concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n").as_bytes(),
    );
    memroute.signal("INT");
    idle.expect_closed();
    let status = memroute.wait_exit(DRAIN_TIMEOUT + EXIT_SLACK);
    let status = status.expect("still running after the drain timeout");
    assert!(status.success(), "exit status {status}");
}

/// Not a signal but the same way out of a session: a client that half-closes after pipelining
/// (`printf … | nc`) gets every reply, also on a tiered route, where the session dispatches one
/// request at a time.
#[test]
fn half_closed_client_gets_every_reply_on_a_tiered_route() {
    let new = Memcached::start();
    let old = Memcached::start();
    let memroute = tiered(&new, &old).start();
    let mut stream = TcpStream::connect(("127.0.0.1", memroute.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let key = format!("{i}:halfclose");
        request.extend_from_slice(
            format!("set {key} 0 0 1\r\n{}\r\nget {key}\r\n", i % 10).as_bytes(),
        );
        expected.extend_from_slice(b"STORED\r\n");
        expected.extend_from_slice(&common::value_reply(
            &key,
            0,
            format!("{}", i % 10).as_bytes(),
        ));
        expected.extend_from_slice(b"END\r\n");
    }
    stream.write_all(&request).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).expect("replies, then EOF");
    assert_eq!(
        common::client::escape(&got, 0),
        common::client::escape(&expected, 0)
    );
}

/// Clients the kernel has already connected (waiting in the listen backlog) when the signal comes
/// have sent their requests too: they are served, not reset.
#[test]
fn connections_waiting_in_the_backlog_at_sigterm_are_served() {
    let backend = Memcached::start();
    let mut memroute = one_pool(&[&backend], "").start();
    // Frozen, memroute accepts nothing; the kernel still completes the handshakes.
    memroute.signal("STOP");
    assert!(
        eventually(Duration::from_secs(5), || all_threads_stopped(
            memroute.pid()
        )),
        "memroute did not stop"
    );
    let mut waiting: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", memroute.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"version\r\n").unwrap();
            s
        })
        .collect();
    // SIGTERM stays pending until SIGCONT; then the signal and the waiting connections are
    // seen together.
    memroute.signal("TERM");
    memroute.signal("CONT");
    let want = concat!("VERSION ", env!("CARGO_PKG_VERSION"), "\r\n");
    for (i, s) in waiting.iter_mut().enumerate() {
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "client {i} in the backlog ({read:?})"
        );
    }
    let status = memroute.wait_exit(DRAIN_TIMEOUT + EXIT_SLACK);
    let status = status.expect("still running after the drain timeout");
    assert!(status.success(), "exit status {status}");
}
