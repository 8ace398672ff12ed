//! How many requests a session may have on their way while it owes its client replies: the
//! per-client byte cap (`[listen] max_client_output`).
//!
//! The bytes of a reply live in the session (in the reply future until it is polled, then in
//! the session's write buffer) from the moment its backend answers until the client reads it.
//! A backend connection reads every answer as it comes and hands it over, so a client that does
//! not read never stalls a backend connection or the other clients on it; the price is that the
//! session must not ask for more than it is willing to hold. Answer sizes are not known before
//! they arrive, so the session budgets with an estimate per key: a decaying maximum of the
//! bytes per key recent answers brought (a TCP-style estimator: up at once, down by 1/8 per
//! answer), starting at the largest value a backend may send. A new connection therefore starts
//! with a few requests on their way and opens up within a few round trips when its values are
//! small (like TCP slow start); one whose values are large keeps about `cap` bytes in flight.
//!
//! Replies already answered but not yet taken by the client (the session's write buffer)
//! count too: a session keeps taking answers off their backend connections while its client
//! does not read (so they never pin a backend connection's read buffers), and stops sending
//! once those bytes reach the cap.
//!
//! The bound: while the estimate holds (answers no larger per key than those just before them),
//! a session holds at most `cap` + one request's answer; a client that reads small values and
//! then suddenly pipelines large ones can exceed it by the answers already on their way, at most
//! `max_inflight` of them.

/// Bytes on the wire around a value: `VALUE <key> <flags> <bytes> <cas>\r\n` … `\r\n`.
const VALUE_OVERHEAD: usize = 320;

/// The byte budget of one session's requests in flight.
///
/// Every request counts as one slot per key it asks for (at least one: a meta get or a `stats`
/// can bring a large answer too), and every slot is expected to bring `per_slot` bytes.
#[derive(Debug)]
pub struct OutputBudget {
    cap: usize,
    /// Expected answer bytes per slot.
    per_slot: usize,
    /// Slots of the requests in flight.
    slots: usize,
}

impl OutputBudget {
    /// A budget of `cap` bytes for a client whose backends may send values up to
    /// `max_value_size` bytes.
    pub fn new(cap: usize, max_value_size: usize) -> OutputBudget {
        OutputBudget {
            cap,
            per_slot: max_value_size.saturating_add(VALUE_OVERHEAD),
            slots: 0,
        }
    }

    /// Whether one more request may be sent on while `unwritten` bytes of replies wait for
    /// the client. With nothing in flight it is enough that those are under the cap, so a
    /// single answer larger than the cap still goes through.
    pub fn may_send(&self, unwritten: usize) -> bool {
        unwritten < self.cap
            && (self.slots == 0
                || unwritten.saturating_add(self.slots.saturating_mul(self.per_slot)) < self.cap)
    }

    /// A request asking for `keys` keys (0: not a retrieval) was sent on.
    pub fn sent(&mut self, keys: u32) {
        self.slots += slots(keys);
    }

    /// The answer to a request sent with `keys` arrived and took `bytes` bytes.
    pub fn answered(&mut self, keys: u32, bytes: usize) {
        let n = slots(keys);
        self.slots = self.slots.saturating_sub(n);
        let sample = bytes / n;
        let decayed = self.per_slot - self.per_slot / 8;
        self.per_slot = sample.max(decayed).max(1);
    }
}

fn slots(keys: u32) -> usize {
    (keys as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    /// How many one-key gets may be in flight at once.
    fn window(b: &mut OutputBudget) -> usize {
        let mut n = 0;
        while b.may_send(0) && n < 100_000 {
            b.sent(1);
            n += 1;
        }
        b.slots -= n;
        n
    }

    /// `n` one-key gets sent and answered with `bytes` bytes each.
    fn answer(b: &mut OutputBudget, n: usize, bytes: usize) {
        for _ in 0..n {
            b.sent(1);
            b.answered(1, bytes);
        }
    }

    #[test]
    fn a_new_client_starts_with_a_few_requests_and_opens_up_for_small_values() {
        let mut b = OutputBudget::new(4 * MIB, MIB);
        assert_eq!(window(&mut b), 4);
        // Answers of 100 bytes: within a few dozen answers the window is wide open.
        answer(&mut b, 60, 100);
        assert!(window(&mut b) > 10_000);
    }

    #[test]
    fn large_values_keep_about_the_cap_in_flight() {
        let mut b = OutputBudget::new(4 * MIB, MIB);
        answer(&mut b, 100, 500_000);
        let w = window(&mut b);
        assert_eq!(w, 4 * MIB / 500_000 + 1);
        assert!(w * 500_000 <= 4 * MIB + 500_000);
    }

    #[test]
    fn one_large_answer_narrows_the_window_at_once() {
        let mut b = OutputBudget::new(4 * MIB, MIB);
        answer(&mut b, 100, 100);
        answer(&mut b, 1, 900_000);
        assert_eq!(window(&mut b), 5);
    }

    #[test]
    fn multi_key_answers_count_per_key_and_a_huge_answer_still_goes_alone() {
        let mut b = OutputBudget::new(4096, MIB);
        assert!(b.may_send(0));
        b.sent(10);
        assert!(!b.may_send(0));
        b.answered(10, 1000);
        assert!(b.may_send(0));
        // Replies the client has not read count against the cap too.
        assert!(!b.may_send(4096));
        // With nothing in flight, being under the cap is enough.
        assert!(b.may_send(3500));
        // Small answers to other commands narrow the estimate too.
        for _ in 0..200 {
            b.sent(0);
            b.answered(0, 8);
        }
        // The estimate falls to the 8-byte lines: hundreds of slots fit in 4096 bytes.
        assert!(window(&mut b) >= 40);
    }
}
