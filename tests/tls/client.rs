//! A blocking TLS client (rustls) that asserts exact reply bytes, like `common::Client`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::common::client::escape;

const READ_TIMEOUT: Duration = Duration::from_secs(5);

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

/// One TLS connection with a read buffer.
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects to `127.0.0.1:port` and completes the handshake (from the client's side: with
    /// TLS 1.3 a server that refuses the client's certificate says so on the first read).
    pub fn connect(port: u16, tls: &ClientTls) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(std::io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            stream,
            buf: Vec::new(),
        })
    }

    /// Connects or panics.
    #[track_caller]
    pub fn open(port: u16, tls: &ClientTls) -> TlsClient {
        TlsClient::connect(port, tls).unwrap_or_else(|e| panic!("TLS connect to {port}: {e}"))
    }

    /// The DER of the certificate the server presented.
    pub fn server_cert(&self) -> Vec<u8> {
        self.stream
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// The negotiated TLS version, e.g. `TLSv1_3`.
    pub fn version(&self) -> String {
        format!("{:?}", self.stream.conn.protocol_version())
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("TLS write");
    }

    /// Writes all of `bytes`, returning the error.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads exactly `expected.len()` bytes, or an error saying what arrived.
    pub fn try_expect(&mut self, expected: &[u8]) -> Result<(), String> {
        loop {
            let have = self.buf.len().min(expected.len());
            if self.buf[..have] != expected[..have] {
                return Err(format!(
                    "reply differs\n  expected: {}\n  actual:   {}",
                    escape(expected, 0),
                    escape(&self.buf, 0)
                ));
            }
            if have == expected.len() {
                self.buf.drain(..have);
                return Ok(());
            }
            match self.fill() {
                Ok(n) if n > 0 => {}
                Ok(_) => return Err(format!("closed after {}", escape(&self.buf, 0))),
                Err(e) => return Err(format!("{e} after {}", escape(&self.buf, 0))),
            }
        }
    }

    /// Reads exactly `expected.len()` bytes and asserts they are `expected`.
    #[track_caller]
    pub fn expect(&mut self, expected: &[u8]) {
        if let Err(e) = self.try_expect(expected) {
            panic!("{e}");
        }
    }

    /// Sends `request` and asserts the reply is exactly `expected`.
    #[track_caller]
    pub fn roundtrip(&mut self, request: &[u8], expected: &[u8]) {
        self.send(request);
        self.expect(expected);
    }

    /// One line, `\r\n` included.
    pub fn read_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            match self.fill() {
                Ok(n) if n > 0 => {}
                res => panic!("no complete line ({res:?}); have {}", escape(&self.buf, 0)),
            }
        }
    }

    /// Whether the server ends the connection (TLS alert, close or reset) instead of answering
    /// `request`.
    pub fn refused(&mut self, request: &[u8]) -> Result<(), String> {
        if self.try_send(request).is_err() {
            return Ok(());
        }
        match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!("got an answer: {}", escape(&self.buf, 0))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("no answer and no close within the read timeout".into())
            }
            Err(_) => Ok(()),
        }
    }
}
