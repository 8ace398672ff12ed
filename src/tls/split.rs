//! A TLS stream in a read half and a write half.
//!
//! The client session and the backend connection read and write one socket from two places
//! (a TCP socket splits for free). A TLS connection is one state machine, so both halves share
//! it behind a lock; the lock is taken only inside `poll_*`, never across an `await`, and both
//! halves are polled by one task, so it is never contended.
//!
//! The read half can also wait for *readiness* without reading ([`ReadHalf::readable`]), which
//! the session needs to keep no read buffer while a client is idle: readable when rustls holds
//! decrypted bytes (or the end) not yet read, else when the socket is.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS stream over TCP, client or server side.
pub trait TlsIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The socket under it.
    fn tcp(&self) -> &TcpStream;
    /// Whether rustls has nothing buffered to hand out and must read the socket first.
    fn wants_read(&self) -> bool;
}

impl TlsIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn wants_read(&self) -> bool {
        self.get_ref().1.wants_read()
    }
}

impl TlsIo for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
    fn wants_read(&self) -> bool {
        self.get_ref().1.wants_read()
    }
}

/// The reading side of [`split`].
pub struct ReadHalf<S>(Arc<Mutex<S>>);

/// The writing side of [`split`].
pub struct WriteHalf<S>(Arc<Mutex<S>>);

/// Splits a TLS stream; the connection closes when both halves are dropped.
pub fn split<S: TlsIo>(stream: S) -> (ReadHalf<S>, WriteHalf<S>) {
    let shared = Arc::new(Mutex::new(stream));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

/// A panic while polling cannot leave rustls' state half-updated in a way that matters more
/// than the panic itself; the connection is dropped right after anyway.
fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: TlsIo> ReadHalf<S> {
    /// Ready when a read would not wait: decrypted bytes (or the end of the stream) are
    /// buffered, or the socket is readable. Like `TcpStream::readable`, it may wake spuriously
    /// (a socket read that completes no TLS record); the read then returns `Pending`.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = lock(&self.0);
        if !s.wants_read() {
            return Poll::Ready(Ok(()));
        }
        s.tcp().poll_read_ready(cx)
    }

    /// [`ReadHalf::poll_readable`] as a future.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }
}

impl<S: TlsIo> AsyncRead for ReadHalf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl<S: TlsIo> AsyncWrite for WriteHalf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }

    /// rustls keeps what the socket did not take: a write is complete only once flushed.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    /// Sends TLS `close_notify`, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}
