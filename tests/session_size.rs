//! Every client connection is one session task; its future's size is most of what an idle
//! connection costs in memory (issue 19: under 2 KiB per idle connection, measured by
//! `bench/run.sh --memory`). Moving the closing steps out of line took it from 4,768 to 768
//! bytes; this keeps it from growing back unnoticed. The task a plain TCP client gets holds only
//! this future: the TLS handshake lives in a task of its own (listener.rs `spawn_tls_session`),
//! which took the bench's figure from 4,322 to 1,994 bytes per connection.

#[tokio::test]
async fn idle_session_state_stays_small() {
    let config = memroute::config::Config::parse(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pools.main]\nservers = [\"127.0.0.1:1\"]\n",
        "test.toml",
    )
    .expect("valid config");
    let metrics = std::sync::Arc::new(memroute::metrics::Metrics::new());
    let shared = memroute::state::Shared::new(config, String::new(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (_stop, signal) = memroute::server::stop::channel();
    let listener_address = std::sync::Arc::new(memroute::config::ListenAddress::Tcp(
        "127.0.0.1:0".to_string(),
    ));
    let session = memroute::server::session::run(
        stream,
        shared,
        memroute::backend::Lane::default(),
        signal.watch(),
        listener_address,
    );
    let size = std::mem::size_of_val(&session);
    assert!(size <= 1024, "a session future is {size} bytes");
}
