//! One write to a backend connection: the queued requests encoded into one buffer, and the
//! in-flight entries the reader will match their answers to.
//!
//! Retrievals with the same verb (and `gat` time) that follow each other in a batch are merged
//! into one command: `get a` from one client and `get b c` from another go out as `get a b c`.
//! memcached 1.6 sends the answer of every `get` command with its own `sendmsg`, so N single-key
//! gets cost it N syscalls where one N-key get costs one; under many concurrent clients this is
//! most of what a proxy's backends spend. The merged answer is split back by walking each
//! line's keys over the `VALUE` blocks ([`pair`]): memcached answers keys in the order asked and
//! leaves misses out. Only adjacent requests merge, so a client's `set` then `get` keep their order.

use std::mem;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::conn::{Answer, Job};
use super::error::BackendError;
use super::inflight::InFlightQueue;
use crate::metrics::ServerMetrics;
use crate::protocol::backend::{Expect, Response, pair};
use crate::protocol::command::{Op, ReplyKind, Retrieval, put_retrieval};

/// A merged retrieval line is kept within this many bytes, `\r\n` included. memcached closes a
/// connection whose buffered input holds over 2048 bytes without a newline unless it starts with
/// `get `/`gets `; a merged `gat` split across two reads must never look like that.
pub const MERGED_LINE_MAX: usize = 2048;

/// A merged retrieval asks for at most this many keys (a single request may ask for more). The
/// whole answer is read before any of it is handed out, so this bounds how many values one
/// client waits behind; past a few dozen keys a merge saves memcached nothing more.
pub const MERGED_KEYS_MAX: usize = 32;

/// A written request waiting for its answer.
pub struct InFlight {
    /// The answer's shape.
    pub kind: ReplyKind,
    /// A retrieval's keys as written on its line (merged requests' keys one after another): the
    /// parser checks every `VALUE` block against them.
    pub keys: Vec<Bytes>,
    /// Who gets the answer.
    pub waiter: Waiter,
    /// When the (first) client stops waiting.
    pub deadline: Instant,
    /// Where its bytes start in the connection's stream: had they reached the wire when the
    /// connection failed?
    pub offset: u64,
}

/// Who is waiting for one backend answer.
pub enum Waiter {
    /// Nobody any more (timed out): the answer is read and dropped.
    Gone,
    /// One request.
    One(oneshot::Sender<Answer>),
    /// Several retrievals merged into one command, each with how many of the line's keys are
    /// its own, in the order written.
    Merged(Vec<(oneshot::Sender<Answer>, usize)>),
}

impl InFlight {
    /// What the parser is to expect for this entry's answer.
    pub fn expect(&self, max_value_size: usize) -> Expect<'_> {
        Expect {
            kind: self.kind,
            keys: &self.keys,
            max_value_size,
        }
    }
}

impl Waiter {
    /// Hands the answer over, split per request if merged.
    pub fn deliver(self, response: Response) {
        match self {
            Waiter::Gone => {}
            Waiter::One(tx) => {
                let _ = tx.send(Ok(response));
            }
            Waiter::Merged(list) => split(list, response),
        }
    }

    /// Fails every request still waiting; returns how many there were.
    pub fn fail(self, error: BackendError) -> u64 {
        match self {
            Waiter::Gone => 0,
            Waiter::One(tx) => {
                let _ = tx.send(Err(error));
                1
            }
            Waiter::Merged(list) => {
                let n = list.len() as u64;
                for (tx, _) in list {
                    let _ = tx.send(Err(error.clone()));
                }
                n
            }
        }
    }

    /// True while some client still waits for the answer.
    pub fn is_waiting(&self) -> bool {
        !matches!(self, Waiter::Gone)
    }

    /// Takes the waiter out, leaving [`Waiter::Gone`].
    pub fn take(&mut self) -> Waiter {
        mem::replace(self, Waiter::Gone)
    }
}

/// Splits a merged retrieval's answer: each request gets the blocks of its own keys, in order,
/// numbered from its own first key. An error line (the command as a whole failed) goes to every
/// request.
fn split(list: Vec<(oneshot::Sender<Answer>, usize)>, response: Response) {
    match response {
        Response::Values(values) => {
            let total = list.iter().map(|(_, n)| n).sum();
            let mut slots = pair(values, total);
            let mut first = 0;
            for (tx, n) in list {
                let mut mine = Vec::new();
                for slot in slots.by_ref().take(n) {
                    let Some(mut v) = slot else { continue };
                    if mine.capacity() == 0 {
                        // One allocation of the request's size at its first hit (none for a
                        // miss): collecting grew from 4 by doubling.
                        mine = Vec::with_capacity(n);
                    }
                    // `pair` yields the slots of keys first..first + n here: asked >= first.
                    v.asked -= first;
                    mine.push(v);
                }
                first += n;
                let _ = tx.send(Ok(Response::Values(mine)));
            }
        }
        other => {
            for (tx, _) in list {
                let _ = tx.send(Ok(other.clone()));
            }
        }
    }
}

/// The retrieval at the end of the batch, which the next one may join.
struct Open {
    kind: Retrieval,
    exptime: i32,
    /// Where its line starts in the write buffer.
    start: usize,
    /// Keys on the line so far.
    keys: usize,
}

/// Builds one write.
pub struct Batch {
    /// Merging is on (the pool's `merge_gets`).
    merge: bool,
    open: Option<Open>,
}

impl Batch {
    /// An empty write; `merge` turns merging of retrievals on.
    pub fn new(merge: bool) -> Batch {
        Batch { merge, open: None }
    }

    /// Encodes `job` into `wbuf` and queues its in-flight entry, merging it into the retrieval
    /// just before it when it can. `written` is the stream offset of `wbuf[0]`.
    pub fn push(
        &mut self,
        q: &mut InFlightQueue,
        wbuf: &mut BytesMut,
        written: u64,
        job: Job,
        metrics: &ServerMetrics,
    ) {
        metrics.requests.inc();
        let Job { op, tx, deadline } = job;
        let offset = written + wbuf.len() as u64;
        let (kind, exptime, keys) = match op {
            Op::Get {
                kind,
                exptime,
                keys,
            } if self.merge => (kind, exptime, keys),
            op => {
                self.open = None;
                metrics.commands.inc();
                op.encode(wbuf);
                let kind = op.reply_kind();
                let keys = match op {
                    Op::Get { keys, .. } => keys,
                    _ => Vec::new(),
                };
                q.push(InFlight {
                    kind,
                    keys,
                    waiter: Waiter::One(tx),
                    deadline,
                    offset,
                });
                return;
            }
        };
        let Err((keys, tx)) = self.join(q, wbuf, kind, exptime, keys, tx) else {
            return;
        };
        metrics.commands.inc();
        let start = wbuf.len();
        put_retrieval(kind, exptime, &keys, wbuf);
        wbuf.put_slice(b"\r\n");
        self.open = Some(Open {
            kind,
            exptime,
            start,
            keys: keys.len(),
        });
        q.push(InFlight {
            kind: ReplyKind::Values,
            keys,
            waiter: Waiter::One(tx),
            deadline,
            offset,
        });
    }

    /// Appends a retrieval's keys to the open line when it has the same verb and time, stays
    /// within [`MERGED_LINE_MAX`] and [`MERGED_KEYS_MAX`] and someone still waits for the line;
    /// otherwise hands the keys and the sender back for a line of their own.
    fn join(
        &mut self,
        q: &mut InFlightQueue,
        wbuf: &mut BytesMut,
        kind: Retrieval,
        exptime: i32,
        keys: Vec<Bytes>,
        tx: oneshot::Sender<Answer>,
    ) -> Result<(), (Vec<Bytes>, oneshot::Sender<Answer>)> {
        let Some(open) = self.open.as_mut() else {
            return Err((keys, tx));
        };
        let extra: usize = keys.iter().map(|k| k.len() + 1).sum();
        let fits = wbuf.len().saturating_sub(open.start) + extra <= MERGED_LINE_MAX
            && open.keys + keys.len() <= MERGED_KEYS_MAX;
        // The open line is always the last entry: the batch holds the queue's lock.
        let last = match q.back_mut() {
            Some(last) if open.kind == kind && open.exptime == exptime && fits => last,
            _ => return Err((keys, tx)),
        };
        let Some(mut list) = merged_waiters(last, open.keys) else {
            return Err((keys, tx));
        };
        // Replace the `\r\n` of the open line with the new keys.
        // The open line ends the buffer: the batch holds the only `&mut`.
        wbuf.truncate(wbuf.len().saturating_sub(2));
        for key in &keys {
            wbuf.put_u8(b' ');
            wbuf.put_slice(key);
        }
        wbuf.put_slice(b"\r\n");
        open.keys += keys.len();
        list.push((tx, keys.len()));
        last.keys.extend(keys);
        last.waiter = Waiter::Merged(list);
        Ok(())
    }
}

/// Takes the open line's waiters out of its entry as a merged list, `None` if nobody waits any
/// more (the entry timed out). `keys` is how many keys the line holds so far.
fn merged_waiters(
    last: &mut InFlight,
    keys: usize,
) -> Option<Vec<(oneshot::Sender<Answer>, usize)>> {
    match last.waiter.take() {
        Waiter::One(tx) => {
            // The line's first merge: room for as many requests and keys as a merged line
            // takes, once. Growing both by doubling cost three `realloc`s per merged command, a
            // tenth of the connection task's instructions on pipelined gets; fresh allocations
            // of these sizes come from malloc's per-thread cache, a `realloc` never does.
            let mut list = Vec::with_capacity(MERGED_KEYS_MAX);
            list.push((tx, keys));
            let mut line = Vec::with_capacity(MERGED_KEYS_MAX.max(keys));
            line.append(&mut last.keys);
            last.keys = line;
            Some(list)
        }
        Waiter::Merged(list) => Some(list),
        Waiter::Gone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::error::{ErrorKind, Origin};
    use crate::metrics::Metrics;
    use crate::protocol::backend::Value;
    use std::time::Duration;

    fn get(kind: Retrieval, exptime: i32, keys: &[&str]) -> (Job, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let op = Op::Get {
            kind,
            exptime,
            keys: keys.iter().map(|k| Bytes::from(k.to_string())).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        (Job { op, tx, deadline }, rx)
    }

    /// Pushes every job into one batch; returns the written lines and the queue.
    fn write(jobs: Vec<Job>) -> (Vec<String>, InFlightQueue) {
        let metrics = Metrics::new().backend.server("s");
        let (mut q, mut wbuf, mut batch) = (
            InFlightQueue::new(Duration::from_secs(5)),
            BytesMut::new(),
            Batch::new(true),
        );
        for job in jobs {
            batch.push(&mut q, &mut wbuf, 0, job, &metrics);
        }
        let text = String::from_utf8(wbuf.to_vec()).unwrap();
        let lines = text.split_inclusive("\r\n").map(str::to_string).collect();
        (lines, q)
    }

    fn value(key: &str, asked: usize, data: &str) -> Value {
        let block = Bytes::from(format!("VALUE {key} 0 {}\r\n{data}\r\n", data.len()));
        Value::new(block, key.len(), data.len(), asked, 0, None)
    }

    fn keys_of(rx: &mut oneshot::Receiver<Answer>) -> Vec<String> {
        match rx.try_recv().expect("answered").expect("no error") {
            Response::Values(v) => v
                .iter()
                .map(|v| String::from_utf8(v.data().to_vec()).unwrap())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn adjacent_retrievals_with_the_same_verb_share_a_line() {
        let (a, _) = get(Retrieval::Get, 0, &["a"]);
        let (b, _) = get(Retrieval::Get, 0, &["b", "c"]);
        let (c, _) = get(Retrieval::Gets, 0, &["a"]);
        let (d, _) = get(Retrieval::Gat, 10, &["a"]);
        let (e, _) = get(Retrieval::Gat, 20, &["a"]);
        let (f, _) = get(Retrieval::Gat, 20, &["b"]);
        let (lines, q) = write(vec![a, b, c, d, e, f]);
        assert_eq!(
            lines,
            [
                "get a b c\r\n",
                "gets a\r\n",
                "gat 10 a\r\n",
                "gat 20 a b\r\n"
            ]
        );
        assert_eq!(q.len(), 4);
    }

    #[tokio::test]
    async fn nothing_merges_when_merging_is_off() {
        let metrics = Metrics::new().backend.server("s");
        let (mut q, mut wbuf, mut batch) = (
            InFlightQueue::new(Duration::from_secs(5)),
            BytesMut::new(),
            Batch::new(false),
        );
        for key in ["a", "b"] {
            batch.push(
                &mut q,
                &mut wbuf,
                0,
                get(Retrieval::Get, 0, &[key]).0,
                &metrics,
            );
        }
        assert_eq!(&wbuf[..], b"get a\r\nget b\r\n");
        assert_eq!(q.len(), 2);
    }

    #[tokio::test]
    async fn any_other_command_ends_the_line() {
        let (a, _) = get(Retrieval::Get, 0, &["k"]);
        let (tx, _rx) = oneshot::channel();
        let delete = Job {
            op: Op::Keyed(crate::protocol::command::Keyed::Delete {
                key: Bytes::from_static(b"k"),
            }),
            tx,
            deadline: Instant::now(),
        };
        let (b, _) = get(Retrieval::Get, 0, &["k"]);
        let (lines, _) = write(vec![a, delete, b]);
        assert_eq!(lines, ["get k\r\n", "delete k\r\n", "get k\r\n"]);
    }

    #[tokio::test]
    async fn merged_lines_stay_within_the_limit() {
        let key = "k".repeat(250);
        let jobs: Vec<Job> = (0..40)
            .map(|_| get(Retrieval::Gat, 0, &[key.as_str()]).0)
            .collect();
        let (lines, q) = write(jobs);
        assert!(lines.len() > 1);
        assert!(
            lines.iter().all(|l| l.len() <= MERGED_LINE_MAX),
            "{lines:?}"
        );
        let keys: usize = lines.iter().map(|l| l.split(' ').count() - 2).sum();
        assert_eq!(keys, 40);
        assert_eq!(q.len(), lines.len());
    }

    #[tokio::test]
    async fn merged_lines_stop_at_the_key_limit() {
        let jobs: Vec<Job> = (0..MERGED_KEYS_MAX + 5)
            .map(|i| get(Retrieval::Get, 0, &[format!("k{i}").as_str()]).0)
            .collect();
        let (lines, _) = write(jobs);
        let counts: Vec<usize> = lines.iter().map(|l| l.split(' ').count() - 1).collect();
        assert_eq!(counts, [MERGED_KEYS_MAX, 5]);
        // A request with more keys than the limit is sent whole, alone.
        let many: Vec<String> = (0..MERGED_KEYS_MAX + 1).map(|i| format!("m{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let (a, _) = get(Retrieval::Get, 0, &["x"]);
        let (b, _) = get(Retrieval::Get, 0, &many);
        let (lines, _) = write(vec![a, b]);
        assert_eq!(lines.len(), 2);
    }

    #[tokio::test]
    async fn a_merged_answer_is_split_by_key_with_misses_and_duplicates() {
        let (a, mut ra) = get(Retrieval::Get, 0, &["x"]);
        let (b, mut rb) = get(Retrieval::Get, 0, &["miss", "x", "y"]);
        let (c, mut rc) = get(Retrieval::Get, 0, &["x"]);
        let (d, mut rd) = get(Retrieval::Get, 0, &["miss"]);
        let (lines, mut q) = write(vec![a, b, c, d]);
        assert_eq!(lines, ["get x miss x y x miss\r\n"]);
        // memcached answers x, x, y, x: the parser places them at keys 0, 2, 3 and 4.
        let answer = vec![
            value("x", 0, "1"),
            value("x", 2, "2"),
            value("y", 3, "3"),
            value("x", 4, "4"),
        ];
        q.pop().unwrap().waiter.deliver(Response::Values(answer));
        assert_eq!(keys_of(&mut ra), ["1"]);
        assert_eq!(keys_of(&mut rb), ["2", "3"]);
        assert_eq!(keys_of(&mut rc), ["4"]);
        assert!(keys_of(&mut rd).is_empty());
    }

    #[tokio::test]
    async fn an_error_line_goes_to_every_merged_request() {
        let (a, mut ra) = get(Retrieval::Get, 0, &["x"]);
        let (b, mut rb) = get(Retrieval::Get, 0, &["y"]);
        let (_, mut q) = write(vec![a, b]);
        let line = Response::Line(Bytes::from_static(b"SERVER_ERROR out of memory\r\n"));
        q.pop().unwrap().waiter.deliver(line.clone());
        assert_eq!(ra.try_recv().unwrap().unwrap(), line);
        assert_eq!(rb.try_recv().unwrap().unwrap(), line);
    }

    #[tokio::test]
    async fn a_failure_reaches_every_merged_request() {
        let (a, mut ra) = get(Retrieval::Get, 0, &["x"]);
        let (b, mut rb) = get(Retrieval::Get, 0, &["y"]);
        let (_, mut q) = write(vec![a, b]);
        let n = q
            .pop()
            .unwrap()
            .waiter
            .take()
            .fail(BackendError::new(ErrorKind::Timeout, Origin::Deadline));
        assert_eq!(n, 2);
        assert!(matches!(ra.try_recv(), Ok(Err(e)) if e.kind == ErrorKind::Timeout));
        assert!(matches!(rb.try_recv(), Ok(Err(e)) if e.kind == ErrorKind::Timeout));
    }
}
