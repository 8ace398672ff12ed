//! Fallback tiers (DESIGN §4). Skeleton: serves tier 0 only until the tier issue lands.

use std::sync::Arc;

use bytes::Bytes;

use super::forward::{self, ReplyFuture};
use super::{Route, Router};
use crate::protocol::command::{Op, Retrieval};

/// A retrieval where at least one key is on a tiered route.
pub fn retrieve(
    router: &Router,
    lane: usize,
    kind: Retrieval,
    exptime: i32,
    keys: Vec<Bytes>,
) -> ReplyFuture {
    forward::multi_get(router, lane, kind, exptime, keys)
}

/// A single-key op on a tiered route.
pub fn dispatch(route: Arc<Route>, lane: usize, op: Op) -> ReplyFuture {
    forward::single(&route, lane, op)
}
