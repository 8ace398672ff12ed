//! twemproxy's modula distribution (`src/hashkit/nc_modula.c`).
//!
//! `modula_update` lays out `weight` consecutive slots per live server, in ring order, and
//! `modula_dispatch` picks slot `hash % total_weight`. Instead of materialising one slot per unit
//! of weight (a weight of 10^6 would cost 8 MB), we keep each server's cumulative end and binary
//! search it: the same answer with one entry per server.

/// Cumulative slot ends: server `s` owns slots `[previous end, end)`.
#[derive(Debug, Clone)]
pub struct Modula {
    ends: Vec<(u64, u32)>,
}

impl Modula {
    /// `servers` yields `(server, weight)` for the live servers in ring order; must be non-empty.
    pub fn new(servers: impl IntoIterator<Item = (u32, u32)>) -> Modula {
        let mut end = 0u64;
        let ends = servers
            .into_iter()
            .map(|(server, weight)| {
                end += u64::from(weight);
                (end, server)
            })
            .collect();
        Modula { ends }
    }

    /// `modula_dispatch`: the server owning slot `hash % total_weight`.
    #[inline]
    pub fn dispatch(&self, hash: u32) -> u32 {
        // twemproxy's slot count is a uint32_t; weights are validated far below overflow.
        let total = self.ends.last().map_or(1, |e| e.0);
        let slot = u64::from(hash) % total;
        let i = self.ends.partition_point(|&(end, _)| end <= slot);
        self.ends[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_weights_in_order() {
        // Slots: [a, b, b, c, c, c]
        let m = Modula::new([(7, 1), (8, 2), (9, 3)]);
        let got: Vec<u32> = (0..12).map(|h| m.dispatch(h)).collect();
        assert_eq!(got, [7, 8, 8, 9, 9, 9, 7, 8, 8, 9, 9, 9]);
        assert_eq!(
            m.dispatch(u32::MAX),
            [7, 8, 8, 9, 9, 9][(u32::MAX % 6) as usize]
        );
    }
}
