//! The backend side: TLS on a new connection to a memcached server.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::reloadable::BackendCerts;

/// The connector of a pool's `tls` (its certificates reload: see [`super::reloadable`]).
pub type Connector = BackendCerts;

/// Why the TLS part of a backend connect failed, as logged.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The handshake failed: a certificate that does not verify (wrong CA, wrong name,
    /// expired), a server that is not TLS, …
    #[error("TLS handshake with {name:?} failed: {source}")]
    Handshake {
        /// The name checked (SNI).
        name: String,
        /// rustls' reason.
        #[source]
        source: std::io::Error,
    },
    /// The server ended the session with a TLS error after the handshake (TLS 1.3 servers
    /// check the client's certificate then).
    #[error("the server ended the TLS session: {0}")]
    Session(String),
    /// No handshake within the pool's timeout.
    #[error("no TLS handshake within the pool's timeout")]
    Timeout,
    /// The pool's certificate files never loaded.
    #[error("no TLS configuration loaded (see the earlier error about its files)")]
    NotLoaded,
}

impl Connector {
    /// Runs the client side of the handshake on `tcp`, presenting `name` as SNI and checking
    /// the server's certificate against it. The caller bounds it with the pool's timeout.
    pub async fn connect(
        &self,
        name: &ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        let config = self.current().ok_or(ConnectError::NotLoaded)?;
        TlsConnector::from(config)
            .connect(name.clone(), tcp)
            .await
            .map_err(|source| ConnectError::Handshake {
                name: name.to_str().into_owned(),
                source,
            })
    }
}

/// TLS to one backend server: the pool's connector, the name checked, and its failure log.
pub struct ServerTls {
    certs: std::sync::Arc<Connector>,
    /// `None` only if the name is invalid, which validation rules out (the same check runs there).
    name: Option<ServerName<'static>>,
    burst: super::burst::BurstLog,
}

impl ServerTls {
    /// TLS to the server at `address` (SNI: the pool's `server_name`, else the host).
    pub fn new(certs: std::sync::Arc<Connector>, address: &str) -> ServerTls {
        let name = super::build::server_name(certs.config(), address).ok();
        ServerTls {
            certs,
            name,
            burst: super::burst::BurstLog::new(),
        }
    }

    /// The handshake on a new connection to the server.
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ConnectError> {
        match &self.name {
            Some(name) => self.certs.connect(name, tcp).await,
            None => Err(ConnectError::NotLoaded),
        }
    }

    /// Whether a read error on an established connection is a TLS error from the server (an
    /// alert: typically it refused our client certificate); logged like a failed handshake.
    pub fn session_failed(&self, server: &str, e: &std::io::Error) -> bool {
        let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) else {
            return false;
        };
        self.log_failure(server, &ConnectError::Session(tls.to_string()));
        true
    }

    /// Logs a failed handshake with `server`: the first of a burst at `warn`, the rest at `debug`.
    pub fn log_failure(&self, server: &str, error: &ConnectError) {
        match self.burst.record(std::time::Instant::now()) {
            Some(quiet) => tracing::warn!(
                server = %server,
                error = %error,
                not_logged_before = quiet,
                "backend TLS handshake failed (further failures in the next 10 s are only counted, in memroute_backend_errors_total{{kind=\"tls\"}})"
            ),
            None => {
                tracing::debug!(server = %server, error = %error, "backend TLS handshake failed")
            }
        }
    }
}
