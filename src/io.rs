//! Small async steps shared by the client side (`server::session`) and the backend side
//! (`backend::conn`): both keep one write buffer per socket and must never wait on a write
//! while there are answers to take.

use std::future::poll_fn;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes what is buffered (returns the bytes taken), or flushes once it is all written
/// (returns 0). Cancel safe: a write that did not complete wrote nothing, and a dropped flush
/// keeps its data buffered.
pub async fn write_or_flush(
    wr: &mut (impl AsyncWrite + Unpin),
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.is_empty() {
        wr.flush().await?;
        return Ok(0);
    }
    match wr.write_buf(buf).await? {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

/// Returns `Pending` once, waking itself at once: the task goes to the back of the run queue,
/// behind the other ready tasks. (`tokio::task::yield_now` defers its wake-up to the worker's
/// next park, which stalled connections under load in tests.)
pub async fn yield_once() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
