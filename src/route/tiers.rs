//! Fallback tiers (DESIGN §4): the logical cache is "tier 0, and where tier 0 has nothing, the
//! first lower tier that has it", and every command keeps memcached's meaning under that view.
//!
//! - [`read`]: retrievals fall through tier by tier, one request per server per tier; `get`
//!   hits from below are answered at once and copied up in the background, `gets`/`gat`/`gats`
//!   copy first and re-read tier 0 so CAS tokens and TTLs are tier 0's.
//! - [`write`]: storage, counters, touch and delete, with copy-up-and-retry and the
//!   `lower_on_write` step that keeps old values from coming back.
//! - [`copy`]: copying one item up with its remaining TTL (`mg <key> v f t`).
//! - [`meta`]: the meta commands (`mg ms md ma`) under the same rules.
//! - [`keylock`]: keeps a copy-up and a delete of the same key from interleaving.
//!
//! A request on a tiered route is a barrier in its client's pipeline (see the session), so the
//! several round trips here cannot be overtaken by the same client's next request.

pub mod copy;
pub mod keylock;
pub mod meta;
pub mod read;
pub mod write;

pub use read::retrieve;
pub use write::dispatch;

use crate::backend::{BackendError, Pool};
use crate::protocol::backend::Response;
use crate::protocol::command::{Keyed, Op};

/// Sends `op` to the server of `pool` that owns its key and waits for the answer.
pub async fn call(pool: &Pool, lane: usize, op: Keyed) -> Result<Response, BackendError> {
    let server = pool.locate(op.key())?;
    server.call(lane, Op::Keyed(op)).await
}

/// True when the answer is exactly `line` (e.g. `STORED\r\n`).
pub fn is_line(answer: &Result<Response, BackendError>, line: &[u8]) -> bool {
    matches!(answer, Ok(Response::Line(l)) if &l[..] == line)
}
