//! memcached with TLS (`-Z`): a [`Memcached`] of tests/common with TLS arguments and a TLS
//! readiness check.

use std::path::Path;
use std::sync::Arc;

use super::client::{ClientTls, TlsClient};
use crate::common::Memcached;
use crate::common::process::ReadyCheck;

/// `memcached -Z` serving TLS only, with `cert`/`key`; ready once a client trusting
/// `ready_check` gets `VERSION`. With `ready_check = None` (its certificate is not to be
/// trusted), ready once it accepts TCP and stays up.
pub fn start(cert: &Path, key: &Path, ready_check: Option<&ClientTls>) -> Memcached {
    start_with(cert, key, "", ready_check)
}

/// As [`start`], with more `-o` settings (`extra`, comma first), e.g.
/// `",ssl_verify_mode=2,ssl_ca_cert=ca.pem"` to require client certificates.
pub fn start_with(
    cert: &Path,
    key: &Path,
    extra: &str,
    ready_check: Option<&ClientTls>,
) -> Memcached {
    let ssl = format!(
        "ssl_chain_cert={},ssl_key={}{extra}",
        cert.display(),
        key.display()
    );
    let ready: ReadyCheck = match ready_check.cloned() {
        Some(tls) => Arc::new(move |port| {
            TlsClient::connect_tls(port, &tls).is_ok_and(|mut c| {
                c.send(b"version\r\n");
                c.read_line().starts_with(b"VERSION ")
            })
        }),
        None => Arc::new(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
    };
    Memcached::start_checked(&["-Z", "-o", &ssl], Some(ready))
}
