//! A blocking TLS client (rustls): `common::Client`, which asserts exact reply bytes, over a
//! TLS stream.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::client::{Client, READ_TIMEOUT, escape};

/// What the client trusts and presents.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts the CA in `ca_pem`, checks the server's certificate against `name`, and presents
    /// `identity` (certificate PEM, key PEM) if given.
    pub fn new(ca_pem: &str, name: &str, identity: Option<(&str, &str)>) -> ClientTls {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA cert");
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client cert PEM");
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key PEM");
                builder
                    .with_client_auth_cert(certs, key)
                    .expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        ClientTls {
            config: Arc::new(config),
            name: ServerName::try_from(name.to_string()).expect("server name"),
        }
    }
}

/// The stream a [`TlsClient`] talks over.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// One TLS connection: [`common::Client`](crate::common::Client) over a rustls stream.
pub type TlsClient = Client<TlsStream>;

impl Client<TlsStream> {
    /// Connects to `127.0.0.1:port` and completes the handshake (from the client's side: with
    /// TLS 1.3 a server that refuses the client's certificate says so on the first read).
    pub fn connect_tls(port: u16, tls: &ClientTls) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Client::over(stream))
    }

    /// Connects or panics.
    #[track_caller]
    pub fn open(port: u16, tls: &ClientTls) -> TlsClient {
        Client::connect_tls(port, tls).unwrap_or_else(|e| panic!("TLS connect to {port}: {e}"))
    }

    /// The DER of the certificate the server presented.
    pub fn server_cert(&self) -> Vec<u8> {
        self.stream()
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// The negotiated TLS version, e.g. `TLSv1_3`.
    pub fn version(&self) -> String {
        format!("{:?}", self.stream().conn.protocol_version())
    }

    /// Whether the server ends the connection (TLS alert, close or reset) instead of answering
    /// `request`.
    pub fn refused(&mut self, request: &[u8]) -> Result<(), String> {
        if self.try_send(request).is_err() {
            return Ok(());
        }
        match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("got an answer: {}", escape(self.buffered(), 0))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("no answer and no close within the read timeout".into())
            }
            Err(_) => Ok(()),
        }
    }
}
