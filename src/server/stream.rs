//! What a client session runs on: a plain TCP connection, a TLS one, or a Unix socket, split
//! in two halves.
//!
//! The session needs three things of its read half beyond `AsyncRead`: to wait until a read
//! would not wait, without reading (an idle client then holds no read buffer), and, at shutdown,
//! to take what already arrived without waiting. [`ClientRead`] is those; [`ClientStream`]
//! splits a connection into a [`ClientRead`] and an `AsyncWrite`.

use std::future::Future;
use std::io::Read;
use std::os::fd::AsFd;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::tls::split::{self, ReadHalf, WriteHalf};

/// A client connection the session can run on.
pub trait ClientStream: Send + 'static {
    /// The read half.
    type Read: ClientRead;
    /// The write half. Writes must be flushed: a TLS half keeps what the socket did not take.
    type Write: AsyncWrite + Unpin + Send + 'static;
    /// Splits the connection; it closes when both halves are dropped.
    fn into_split(self) -> (Self::Read, Self::Write);
}

/// The read half of a [`ClientStream`].
pub trait ClientRead: AsyncRead + Unpin + Send + 'static {
    /// Completes when a read would not wait (data, the end, or an error). May complete
    /// spuriously; the read then returns `Pending`.
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_;

    /// Reads what has already arrived, without waiting, up to `limit` bytes; true if that
    /// reached the end of the client's input.
    fn read_arrived(&mut self, buf: &mut BytesMut, limit: usize) -> bool;
}

impl ClientStream for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        TcpStream::into_split(self)
    }
}

impl ClientRead for OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        OwnedReadHalf::readable(self)
    }

    /// Reads through a duplicate of the descriptor: tokio's own `try_read` answers
    /// `WouldBlock` until its reactor has seen the readiness event, which may still be on its
    /// way; a plain non-blocking `read(2)` asks the kernel. The socket is never read through
    /// tokio afterwards.
    fn read_arrived(&mut self, buf: &mut BytesMut, limit: usize) -> bool {
        let Ok(fd) = self.as_ref().as_fd().try_clone_to_owned() else {
            return false;
        };
        // The duplicate shares the open file description, so it is non-blocking too.
        read_fd(std::net::TcpStream::from(fd), buf, limit)
    }
}

impl ClientStream for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    fn into_split(self) -> (Self::Read, Self::Write) {
        tokio::net::UnixStream::into_split(self)
    }
}

impl ClientRead for tokio::net::unix::OwnedReadHalf {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        tokio::net::unix::OwnedReadHalf::readable(self)
    }

    /// As for TCP: a non-blocking `read(2)` on a duplicate of the descriptor.
    fn read_arrived(&mut self, buf: &mut BytesMut, limit: usize) -> bool {
        let Ok(fd) = self.as_ref().as_fd().try_clone_to_owned() else {
            return false;
        };
        read_fd(std::os::unix::net::UnixStream::from(fd), buf, limit)
    }
}

/// Reads a non-blocking socket until it would block, ends, or `limit` bytes came; true at
/// the end of the input.
fn read_fd(mut socket: impl Read, buf: &mut BytesMut, limit: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    let mut total = 0;
    while total < limit {
        match socket.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    false
}

/// A client's TLS connection after the handshake.
pub type TlsClient = tokio_rustls::server::TlsStream<TcpStream>;

impl ClientStream for TlsClient {
    type Read = ReadHalf<TlsClient>;
    type Write = WriteHalf<TlsClient>;
    fn into_split(self) -> (Self::Read, Self::Write) {
        split::split(self)
    }
}

impl ClientRead for ReadHalf<TlsClient> {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send + '_ {
        ReadHalf::readable(self)
    }

    /// Only what tokio has already seen arrive: TLS bytes cannot be read around rustls, so a
    /// request whose bytes reached the kernel in the very last moment before shutdown may be
    /// left unanswered (the client sees the connection close, as with any late request).
    fn read_arrived(&mut self, buf: &mut BytesMut, limit: usize) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let mut total = 0;
        while total < limit {
            match self.read(&mut chunk).now_or_never() {
                Some(Ok(0)) => return true,
                Some(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    total += n;
                }
                Some(Err(_)) | None => break,
            }
        }
        false
    }
}
