//! The client side: a TLS handshake on an accepted connection, bounded by `handshake_timeout`,
//! with failures counted by reason and logged once per burst.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::reloadable::ListenCerts;
use crate::metrics::{Metrics, TlsFailure as Failure};

/// The acceptor of a TLS listener (its certificates reload: see [`super::reloadable`]).
pub type Acceptor = ListenCerts;

/// The reason of a failed handshake's error.
pub fn reason(e: &std::io::Error) -> Failure {
    if let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::NoCertificatesPresented => Failure::NoClientCertificate,
            rustls::Error::InvalidCertificate(_) => Failure::BadClientCertificate,
            rustls::Error::AlertReceived(_) => Failure::ClientAlert,
            rustls::Error::PeerIncompatible(_) => Failure::Incompatible,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::PeerSentOversizedRecord
            | rustls::Error::DecryptError => Failure::Protocol,
            _ => Failure::Other,
        };
    }
    use std::io::ErrorKind as K;
    match e.kind() {
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            Failure::Closed
        }
        K::InvalidData => Failure::Protocol,
        _ => Failure::Other,
    }
}
impl Acceptor {
    /// Runs the server side of the handshake on `stream`, at most `handshake_timeout`; `None`
    /// (counted and logged) if it fails: the caller then drops the connection, which frees its
    /// slot.
    pub async fn accept(
        &self,
        stream: TcpStream,
        metrics: &Metrics,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let Some(config) = self.current() else {
            self.failed(
                metrics,
                peer,
                Failure::NoCertificate,
                "no certificate loaded",
            );
            return None;
        };
        let handshake = TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(self.config().handshake_timeout, handshake).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                self.failed(metrics, peer, reason(&e), &e.to_string());
                None
            }
            Err(_) => {
                let msg = format!(
                    "no handshake within {}",
                    humantime::format_duration(self.config().handshake_timeout)
                );
                self.failed(metrics, peer, Failure::Timeout, &msg);
                None
            }
        }
    }

    fn failed(&self, metrics: &Metrics, peer: Option<SocketAddr>, why: Failure, error: &str) {
        metrics.client.tls_failure(why).inc();
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        match self.burst.record(Instant::now()) {
            Some(quiet) => tracing::warn!(
                reason = why.label(),
                peer = %peer,
                error = %error,
                not_logged_before = quiet,
                "client TLS handshake failed (further failures in the next 10 s are only counted, in memroute_client_tls_handshake_failures_total)"
            ),
            None => {
                tracing::debug!(reason = why.label(), peer = %peer, error = %error, "client TLS handshake failed")
            }
        }
    }
}
