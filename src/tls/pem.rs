//! Reading PEM files: certificate chains, CA bundles and private keys, each error naming the file
//! and saying what is wrong with it.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Certificate and CA files are a few kilobytes; a bigger file is surely the wrong one, and is
/// not read into memory whole.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The bytes of `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |e: std::io::Error| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.is_dir() {
        return Err(invalid(path, "is a directory, not a PEM file"));
    }
    if meta.len() > MAX_FILE {
        return Err(invalid(
            path,
            format!("{} bytes is too large for a PEM file", meta.len()),
        ));
    }
    std::fs::read(path).map_err(fail)
}

/// Every `CERTIFICATE` block of the PEM text `bytes` read from `path`; at least one.
pub fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not valid PEM: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        return Err(invalid(
            path,
            "no certificate in it (expected a \"-----BEGIN CERTIFICATE-----\" block)",
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of the PEM text `bytes` read from `path`.
pub fn key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            path,
            "no private key in it (expected a \"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" \
             or \"EC PRIVATE KEY\" block)",
        ),
        e => invalid(path, format!("not valid PEM: {}", pem_reason(&e))),
    })
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section has no end line (expected {:?})",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("bad section start {:?}", String::from_utf8_lossy(line))
        }
        Error::Base64Decode(reason) => format!("bad base64: {reason}"),
        other => other.to_string(),
    }
}

pub(super) fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_has_no_certificate() {
        let err = certs(Path::new("/x/cert.pem"), b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/x/cert.pem: no certificate in it (expected a \"-----BEGIN CERTIFICATE-----\" block)"
        );
    }

    #[test]
    fn a_truncated_block_is_named() {
        let err = certs(Path::new("c.pem"), b"-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.pem: not valid PEM: "), "{msg}");
    }

    #[test]
    fn a_certificate_file_is_not_a_key() {
        let err = key(
            Path::new("k.pem"),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("k.pem: no private key in it"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_says_why() {
        let err = read(Path::new("/nonexistent/memroute/key.pem")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/nonexistent/memroute/key.pem: cannot read: No such file or directory (os error 2)"
        );
    }
}
