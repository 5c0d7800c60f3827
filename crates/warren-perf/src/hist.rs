//! A log-linear latency histogram (HdrHistogram-like): exact below 128, then 128
//! sub-buckets per power of two, so every recorded value is reported within 1%
//! (rounded up), in bounded memory whatever the run length.

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let mag = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = mag - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    (((shift as u64 + 1) << SUB_BITS) + sub) as usize
}

/// Highest value that maps to bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i >> SUB_BITS) - 1;
    let sub = i & (SUB - 1);
    let low = (SUB + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: Vec::new(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        let i = index(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at percentile `p` (0..=100), nearest-rank: the smallest recorded
    /// value (bucket) at or below which `p`% of the samples fall. 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let rank = rank.min(self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max).max(self.min());
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev_high = None;
        for i in 0..(40 << SUB_BITS) {
            let hi = bucket_high(i);
            if let Some(p) = prev_high {
                assert_eq!(index(p + 1), i, "bucket {i}");
            }
            assert_eq!(index(hi), i);
            prev_high = Some(hi);
        }
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            123_456_789,
            u64::MAX,
        ] {
            let hi = bucket_high(index(v));
            assert!(hi >= v);
            assert!((hi - v) as f64 <= v as f64 / 100.0 + 1.0, "{v} -> {hi}");
        }
    }

    #[test]
    fn exact_percentiles_for_small_values() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(90.0), 90);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(99.9), 100);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_within_one_percent_for_large_values() {
        let mut h = Histogram::new();
        // 1000 samples at 1 ms, one outlier at 2 s: p99.9 must not see the outlier,
        // max must.
        for _ in 0..1000 {
            h.record(1_000_000);
        }
        h.record(2_000_000_000);
        for p in [50.0, 90.0, 99.0, 99.9] {
            let v = h.percentile(p);
            assert!((1_000_000..=1_010_000).contains(&v), "p{p} = {v}");
        }
        assert_eq!(h.percentile(100.0), 2_000_000_000);
        assert_eq!(h.max(), 2_000_000_000);
    }

    #[test]
    fn merge_and_empty() {
        let e = Histogram::new();
        assert_eq!(e.percentile(99.0), 0);
        assert_eq!(e.min(), 0);
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 0..500 {
            a.record(v);
        }
        for v in 500..1000 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        let p50 = a.percentile(50.0);
        assert!((499..=503).contains(&p50), "{p50}");
        assert_eq!(a.max(), 999);
    }
}
