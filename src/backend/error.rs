//! The one error type of the backend layer, in pingora's style: what went wrong ([`ErrorKind`],
//! which decides the client's `SERVER_ERROR` line), where ([`Origin`]), whether a retry is safe
//! (the request never reached the wire) and the underlying cause (an I/O error, the bytes that
//! broke the protocol), which logs show.

use std::fmt;
use std::sync::Arc;

/// What went wrong; each kind is one `SERVER_ERROR` line for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No answer within the pool's `timeout`.
    Timeout,
    /// The server could not be connected to.
    Connect,
    /// The connection was lost before the answer came.
    Closed,
    /// The server is marked down after `failure_limit` failures.
    Down,
    /// The backend's answer could not be parsed, or answered something not asked.
    Protocol,
    /// Every server of the pool is ejected.
    NoServer,
    /// The TLS handshake with the server failed (its certificate does not verify, …).
    Tls,
}

impl ErrorKind {
    /// The exact line sent to the client.
    pub fn reply(self) -> &'static [u8] {
        match self {
            ErrorKind::Timeout => b"SERVER_ERROR timeout\r\n",
            ErrorKind::Connect => b"SERVER_ERROR backend connect failed\r\n",
            ErrorKind::Closed => b"SERVER_ERROR backend connection closed\r\n",
            ErrorKind::Down => b"SERVER_ERROR backend marked down\r\n",
            ErrorKind::Protocol => b"SERVER_ERROR backend protocol error\r\n",
            ErrorKind::NoServer => b"SERVER_ERROR no live backend\r\n",
            ErrorKind::Tls => b"SERVER_ERROR backend TLS handshake failed\r\n",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "backend connect failed",
            ErrorKind::Closed => "backend connection closed",
            ErrorKind::Down => "backend marked down",
            ErrorKind::Protocol => "backend protocol error",
            ErrorKind::NoServer => "no live backend",
            ErrorKind::Tls => "backend TLS handshake failed",
        }
    }
}

/// Where on the way to the server and back the error arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Picking a server: the ring had none, or the server is marked down (never sent).
    Routing,
    /// Opening the connection.
    Connect,
    /// Writing the request.
    Write,
    /// Reading the answer (end of stream, reset).
    Read,
    /// The answer broke the protocol.
    Parse,
    /// The request's deadline passed.
    Deadline,
    /// The connection task ended without answering (a panic; a bug, logged as one).
    Task,
}

/// A failed backend request.
#[derive(Debug, Clone)]
pub struct BackendError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where.
    pub origin: Origin,
    /// The request may have reached the server (and been applied): it must not be retried. False
    /// for requests refused before anything was written.
    pub written: bool,
    /// The underlying error, if any.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// An error without a cause, for a request not written.
    pub fn new(kind: ErrorKind, origin: Origin) -> BackendError {
        BackendError {
            kind,
            origin,
            written: false,
            cause: None,
        }
    }

    /// Says whether the request reached the wire.
    pub fn written(mut self, written: bool) -> BackendError {
        self.written = written;
        self
    }

    /// Keeps the underlying error.
    pub fn because(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> BackendError {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// True when sending the request again cannot apply it twice.
    pub fn retry_safe(&self) -> bool {
        !self.written
    }

    /// The exact line sent to the client.
    pub fn reply(&self) -> &'static [u8] {
        self.kind.reply()
    }
}

/// An error of this kind with nothing more known (not written, no cause).
impl From<ErrorKind> for BackendError {
    fn from(kind: ErrorKind) -> BackendError {
        BackendError::new(kind, Origin::Routing)
    }
}

impl PartialEq for BackendError {
    /// Errors compare by kind: that is what the client sees.
    fn eq(&self, other: &BackendError) -> bool {
        self.kind == other.kind
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}", self.kind.text(), self.origin)?;
        if self.written {
            f.write_str(", written")?;
        }
        f.write_str(")")?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_and_the_side_show_in_the_log_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = BackendError::new(ErrorKind::Closed, Origin::Read)
            .written(true)
            .because(io);
        assert_eq!(
            e.to_string(),
            "backend connection closed (Read, written): reset by peer"
        );
        assert!(!e.retry_safe());
        assert_eq!(e.reply(), b"SERVER_ERROR backend connection closed\r\n");
        let down: BackendError = ErrorKind::Down.into();
        assert!(down.retry_safe());
        assert_eq!(down.to_string(), "backend marked down (Routing)");
    }
}
