//! A log-linear latency histogram (the idea of HdrHistogram, in 60 lines): values below 2^S are
//! exact, above that each power of two is split into 2^S buckets, so any recorded value is known
//! to within 1/2^S (1.6 % with S = 6) whatever its size, in a fixed 18 KB array.

/// Sub-buckets per power of two, as a bit count.
const S: u32 = 6;
/// Enough buckets for 2^40 ns (18 minutes): far beyond any bounded run.
const BUCKETS: usize = ((40 - S + 1) << S) as usize;

/// Latencies in nanoseconds.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    /// Records one value (ns); larger values than the range land in the last bucket.
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns).min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1) in ns: the middle of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bounds(i);
                return low + width / 2;
            }
        }
        unreachable!("rank <= total")
    }
}

fn index(v: u64) -> usize {
    if v < (1 << S) {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // position of the leading one, >= S
    let mantissa = (v >> (e - S)) & ((1 << S) - 1);
    (((e - S + 1) as u64) << S | mantissa) as usize
}

/// Lowest value of bucket `i` and its width.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < (1 << S) {
        return (i, 1);
    }
    let e = (i >> S) as u32 + S - 1;
    let mantissa = i & ((1 << S) - 1);
    (((1 << S) + mantissa) << (e - S), 1 << (e - S))
}

/// Checked once per worker start (a `harness = false` bench has no test runner).
pub fn self_check() {
    for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456, 9_999_999_999] {
        let (low, width) = bounds(index(v));
        assert!(low <= v && v < low + width, "histogram bucket of {v}");
        assert!(width <= 1 + v / (1 << S), "histogram precision at {v}");
    }
    let mut h = Histogram::new();
    for v in 1..=1000 {
        h.record(v * 1000);
    }
    let p50 = h.quantile(0.5) as f64;
    assert!((p50 / 500_000.0 - 1.0).abs() < 0.02, "histogram p50 {p50}");
}
