//! TLS to clients and to backends (rustls), with certificates that reload.
//!
//! - Config: [`ListenTls`] (`[listen] tls`: the proxy's certificate and key, optionally a CA that
//!   client certificates must chain to) and [`BackendTls`] (`[pools.NAME] tls`: the CA the servers'
//!   certificates must chain to, or the system roots; the SNI name; optionally a client
//!   certificate). Both hold paths only; [`pem`] reads the files, [`build`] turns them into rustls
//!   configs, and config validation calls both so a bad file is a located config error.
//! - [`reloadable`]: an acceptor or connector behind an `ArcSwap`, re-read on config reload,
//!   `SIGHUP` and when its files change; new connections use the new certificates, existing ones
//!   keep theirs. A file that does not load keeps the previous certificates.
//! - [`accept`] (client side: handshake under a timeout, failures counted by reason) and
//!   [`connect`] (backend side: SNI, failures counted per server).
//! - [`split`]: a TLS stream in read and write halves that can still tell readiness, so the
//!   client session and the backend connection run on TLS exactly as on TCP.
//! - [`burst`]: handshake failures are logged once per burst, not once per connection.

pub mod accept;
pub mod build;
pub mod burst;
pub mod connect;
pub mod pem;
pub mod reloadable;
pub mod split;

use std::path::PathBuf;
use std::time::Duration;

pub use accept::Acceptor;
pub use connect::Connector;
pub use reloadable::Registry;

/// Default bound on a client's TLS handshake: a client that connects and sends nothing (or
/// trickles bytes) holds a connection slot no longer than this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// `[listen] tls`: TLS for clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenTls {
    /// PEM certificate chain, the proxy's certificate first.
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate that chains to it (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Longest a client's handshake may take.
    pub handshake_timeout: Duration,
}

/// `[pools.NAME] tls`: TLS to the pool's servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// PEM CA bundle the servers' certificates must chain to; `None`: the system's trust store.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and checked against the server certificate; `None`: each server's
    /// host as written in `servers` (an IP address is checked as an IP address).
    pub server_name: Option<String>,
    /// PEM client certificate chain, for servers that require one.
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    pub key: Option<PathBuf>,
}

impl ListenTls {
    /// The files this config reads.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.cert.clone(), self.key.clone()];
        files.extend(self.client_ca.clone());
        files
    }
}

impl BackendTls {
    /// The files this config reads.
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Why TLS material could not be loaded. Every message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is not what it should be (no PEM block of the right kind, bad encoding, a key
    /// that does not match its certificate, …).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting other than a file is wrong (e.g. an invalid server name).
    #[error("{0}")]
    Setting(String),
}

impl TlsError {
    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            TlsError::Read { path, .. } | TlsError::Invalid { path, .. } => Some(path),
            TlsError::Setting(_) => None,
        }
    }
}

/// The crypto provider every rustls config of the process uses (ring: see Cargo.toml).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
