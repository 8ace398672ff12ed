//! rustls configs from [`ListenTls`] and [`BackendTls`]: read every file, check it, build.
//!
//! TLS 1.3 and 1.2 are offered (rustls has neither older versions nor weak ciphers). A key that
//! does not belong to its certificate is refused here, when the config is loaded, rather than
//! at the first handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::pem::{self, invalid};
use super::{BackendTls, ListenTls, TlsError, provider};

/// Both versions rustls implements.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What a build read: the config and the bytes of every file, which tell a later reload whether
/// anything changed.
pub struct Built<T> {
    /// The rustls config.
    pub config: Arc<T>,
    /// The contents of every file read, in [`ListenTls::files`] / [`BackendTls::files`] order.
    pub contents: Vec<Vec<u8>>,
}

/// The client-facing config of `[listen] tls`.
pub fn server_config(tls: &ListenTls) -> Result<Built<ServerConfig>, TlsError> {
    let mut contents = Vec::new();
    let (certs, key) = cert_and_key(&tls.cert, &tls.key, &mut contents)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Setting(format!("TLS versions: {e}")))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = roots(path, &mut contents)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(path, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // No ALPN list: memcached's protocol has no ALPN name, and clients that offer one are not
    // refused for it.
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_error(&tls.key, &tls.cert, e))?;
    Ok(Built {
        config: Arc::new(config),
        contents,
    })
}

/// The backend config of a pool's `tls`.
pub fn client_config(tls: &BackendTls) -> Result<Built<ClientConfig>, TlsError> {
    let mut contents = Vec::new();
    let roots = match &tls.ca {
        Some(path) => roots(path, &mut contents)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Setting(format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let (certs, k) = cert_and_key(cert, key, &mut contents)?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| key_error(key, cert, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Setting(
                "`cert` and `key` go together: set both or neither".into(),
            ));
        }
    };
    Ok(Built {
        config: Arc::new(config),
        contents,
    })
}

/// The name a backend connection sends as SNI and checks the certificate against: `server_name`
/// if set, else the host of `address` (`host:port`, `[v6]:port`).
pub fn server_name(tls: &BackendTls, address: &str) -> Result<ServerName<'static>, TlsError> {
    let name = match &tls.server_name {
        Some(name) => name.as_str(),
        None => host(address),
    };
    ServerName::try_from(name.to_string()).map_err(|_| {
        TlsError::Setting(format!(
            "{name:?} is not a valid TLS server name (a DNS name or an IP address)"
        ))
    })
}

/// The host part of `host:port`, without the brackets of an IPv6 address.
fn host(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

fn cert_and_key(
    cert: &Path,
    key: &Path,
    contents: &mut Vec<Vec<u8>>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_bytes = pem::read(cert)?;
    let certs = pem::certs(cert, &cert_bytes)?;
    let key_bytes = pem::read(key)?;
    let k = pem::key(key, &key_bytes)?;
    contents.push(cert_bytes);
    contents.push(key_bytes);
    Ok((certs, k))
}

/// A CA bundle: every certificate of the file must be a usable trust anchor.
fn roots(path: &Path, contents: &mut Vec<Vec<u8>>) -> Result<RootCertStore, TlsError> {
    let bytes = pem::read(path)?;
    let mut store = RootCertStore::empty();
    for (i, cert) in pem::certs(path, &bytes)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            invalid(
                path,
                format!("certificate {} is not a usable CA certificate: {e}", i + 1),
            )
        })?;
    }
    contents.push(bytes);
    Ok(store)
}

/// The operating system's trust store (on Debian: /etc/ssl/certs from `ca-certificates`).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(TlsError::Setting(format!(
            "no system CA certificates ({why}); install ca-certificates or set `ca`"
        )));
    }
    Ok(store)
}

fn key_error(key: &Path, cert: &Path, e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => invalid(
            key,
            format!(
                "is not the key of the certificate in {} ({e})",
                cert.display()
            ),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            invalid(cert, format!("not a usable certificate: {e}"))
        }
        e => invalid(key, format!("not a usable private key: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_defaults_to_the_host_as_written() {
        let tls = BackendTls {
            ca: None,
            server_name: None,
            cert: None,
            key: None,
        };
        assert_eq!(
            server_name(&tls, "cache-0.memcached:11211").unwrap(),
            ServerName::try_from("cache-0.memcached").unwrap()
        );
        assert_eq!(
            server_name(&tls, "[::1]:11211").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        let named = BackendTls {
            server_name: Some("cache.example".into()),
            ..tls
        };
        assert_eq!(
            server_name(&named, "10.0.0.1:11211").unwrap(),
            ServerName::try_from("cache.example").unwrap()
        );
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let tls = BackendTls {
            ca: None,
            server_name: Some("no spaces".into()),
            cert: None,
            key: None,
        };
        assert!(server_name(&tls, "h:1").is_err());
    }
}
