//! The replies a session has taken off its backends but not yet written to its client.
//!
//! Small replies are gathered into one buffer, so a batch of them goes out in one `send`. A
//! large value is not copied: its block stays in the `Bytes` its backend connection read it
//! into, queued behind what came before it, and everything goes out in one vectored write.
//! Copying 100 KiB values into the write buffer was 8.5 % of memroute's CPU in the
//! benchmark's workload (i) (`perf`, issue 19); nutcracker forwards its buffers the same way.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::protocol::reply::{self, Reply};

/// Blocks at least this large are queued as they are instead of copied: below it, a copy costs
/// less than the extra `iovec` and the reference count.
const SHARE_MIN: usize = 16 * 1024;

/// At most this many pieces per vectored write (each queued block is one; the rest follows in
/// the next write).
const MAX_SLICES: usize = 64;

/// Replies not yet written, in order: the `queued` pieces, then `tail`.
#[derive(Debug, Default)]
pub struct Replies {
    /// Pieces that come before `tail`: large blocks, and the small replies gathered before each.
    queued: VecDeque<Bytes>,
    /// Where small replies are appended.
    tail: BytesMut,
    /// Bytes in `queued` and `tail`.
    len: usize,
}

impl Replies {
    /// No replies, and no memory held (an idle connection keeps none).
    pub fn new() -> Replies {
        Replies::default()
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `reply`'s wire bytes.
    pub fn push(&mut self, reply: &Reply) {
        match reply {
            Reply::None => {}
            Reply::Static(l) => self.copy(l),
            Reply::Line(l) => self.block(l),
            Reply::Values(blocks) => {
                // One allocation for what is copied, not one per doubling.
                let copied: usize = blocks
                    .iter()
                    .map(Bytes::len)
                    .filter(|&n| n < SHARE_MIN)
                    .sum();
                self.reserve(copied + reply::END.len());
                for b in blocks {
                    self.block(b);
                }
                self.copy(reply::END);
            }
        }
    }

    /// Gives the buffers back once everything is written.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            *self = Replies::new();
        }
    }

    /// Writes what the socket takes of the replies (returns the bytes taken), or flushes once
    /// they are all written (returns 0). Cancel safe: a write that did not complete wrote nothing,
    /// and a dropped flush keeps its data buffered.
    pub async fn write_or_flush(
        &mut self,
        wr: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<usize> {
        if self.queued.is_empty() {
            // The usual case, one buffer (and the flush once everything is written).
            let n = crate::io::write_or_flush(wr, &mut self.tail).await?;
            self.len -= n;
            return Ok(n);
        }
        let n = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let pieces = self.queued.iter().map(|b| &b[..]);
            let mut k = 0;
            for (slot, piece) in slices.iter_mut().zip(pieces.chain([&self.tail[..]])) {
                *slot = IoSlice::new(piece);
                k += 1;
            }
            Pin::new(&mut *wr).poll_write_vectored(cx, &slices[..k])
        })
        .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.advance(n);
        Ok(n)
    }

    /// `n` bytes were written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.queued.front_mut() else {
                self.tail.advance(n);
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queued.pop_front();
        }
    }

    /// Appends a block: queued as it is when large, else copied.
    fn block(&mut self, block: &Bytes) {
        if block.len() < SHARE_MIN {
            return self.copy(block);
        }
        if !self.tail.is_empty() {
            self.queued.push_back(self.tail.split().freeze());
        }
        self.queued.push_back(block.clone());
        self.len += block.len();
    }

    fn copy(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Makes room for `n` more copied bytes: an empty buffer starts at [`REPLY_BUFFER_MIN`].
    fn reserve(&mut self, n: usize) {
        if self.tail.capacity() == 0 {
            self.tail.reserve(n.max(REPLY_BUFFER_MIN));
        } else {
            self.tail.reserve(n);
        }
    }
}

/// A reply buffer starts with room for this much: a pipelining client's replies are gathered
/// into one buffer, and growing it from the first reply's size by doubling cost a `realloc`
/// per doubling. Small enough to come from malloc's per-thread cache like a single reply.
const REPLY_BUFFER_MIN: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn value(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    /// The reply as memcached puts it on the wire.
    fn wire(reply: &Reply) -> Vec<u8> {
        match reply {
            Reply::None => Vec::new(),
            Reply::Static(l) => l.to_vec(),
            Reply::Line(l) => l.to_vec(),
            Reply::Values(blocks) => [blocks.concat(), reply::END.to_vec()].concat(),
        }
    }

    /// Writes everything through a writer that takes at most `chunk` bytes per call.
    async fn drain(replies: &mut Replies, chunk: usize) -> Vec<u8> {
        let (mut wr, mut rd) = tokio::io::duplex(chunk);
        let mut out = Vec::new();
        while !replies.is_empty() {
            let n = replies.write_or_flush(&mut wr).await.unwrap();
            assert!(n > 0 && n <= chunk);
            let mut buf = vec![0; n];
            tokio::io::AsyncReadExt::read_exact(&mut rd, &mut buf)
                .await
                .unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    #[tokio::test]
    async fn small_and_large_blocks_come_out_in_order_through_short_writes() {
        let big = value(SHARE_MIN + 5, b'b');
        let huge = value(3 * SHARE_MIN, b'h');
        let replies = [
            Reply::Static(reply::STORED),
            Reply::Values(vec![
                value(10, b's'),
                big.clone(),
                value(3, b't'),
                huge.clone(),
            ]),
            Reply::Line(Bytes::from_static(b"HD\r\n")),
            Reply::Values(vec![]),
        ];
        let mut expected = Vec::new();
        let mut r = Replies::new();
        for reply in &replies {
            expected.extend_from_slice(&wire(reply));
            r.push(reply);
        }
        assert_eq!(r.len(), expected.len());
        // The large blocks were queued, not copied: they are the same memory.
        assert!(r.queued.iter().any(|q| q.as_ptr() == big.as_ptr()));
        assert!(r.queued.iter().any(|q| q.as_ptr() == huge.as_ptr()));
        for chunk in [7, 4096, 1 << 20] {
            let mut again = Replies::new();
            replies.iter().for_each(|reply| again.push(reply));
            assert_eq!(drain(&mut again, chunk).await, expected, "chunk {chunk}");
            assert_eq!(again.len(), 0);
        }
    }

    #[tokio::test]
    async fn more_pieces_than_one_write_takes_are_written_in_turn() {
        let mut r = Replies::new();
        let mut expected = Vec::new();
        for i in 0..(2 * MAX_SLICES as u8) {
            let v = Reply::Values(vec![value(10, b'x'), value(SHARE_MIN, i)]);
            expected.extend_from_slice(&wire(&v));
            r.push(&v);
        }
        assert_eq!(drain(&mut r, 1 << 24).await, expected);
    }

    #[test]
    fn an_empty_queue_gives_its_buffers_back() {
        let mut r = Replies::new();
        r.push(&Reply::Static(reply::END));
        r.advance(reply::END.len());
        assert!(r.is_empty());
        r.release_if_empty();
        assert_eq!(r.tail.capacity(), 0);
        assert_eq!(r.queued.capacity(), 0);
    }
}
