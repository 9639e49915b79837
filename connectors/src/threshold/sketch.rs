//! A quantile sketch: counts in logarithmic bins, as DDSketch does, so that
//! any quantile is within 1% of the true value whatever the distribution,
//! in memory that grows with the spread of values rather than their count.

use std::collections::BTreeMap;

/// Bin boundaries grow by this factor: (1 + 1%) / (1 - 1%).
const GAMMA: f64 = 1.0202;
/// Values at or below this (milliseconds, dollars) count as zero.
const SMALLEST: f64 = 1e-6;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    bins: BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

impl Sketch {
    pub fn add(&mut self, value: f64) {
        self.add_many(value, 1);
    }

    pub fn add_many(&mut self, value: f64, count: u64) {
        if count == 0 {
            return;
        }
        self.count += count;
        if value.is_nan() || value <= SMALLEST {
            self.zeros += count;
        } else {
            *self.bins.entry(bin_of(value)).or_default() += count;
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.count += other.count;
        self.zeros += other.zeros;
        for (bin, count) in &other.bins {
            *self.bins.entry(*bin).or_default() += count;
        }
    }

    /// The value at quantile `q` (0 to 1), as the nearest-rank method
    /// picks it.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank <= self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (bin, count) in &self.bins {
            seen += count;
            if seen >= rank {
                return Some(value_of(*bin));
            }
        }
        self.bins.keys().next_back().map(|bin| value_of(*bin))
    }
}

fn bin_of(value: f64) -> i32 {
    (value.ln() / GAMMA.ln()).ceil() as i32
}

/// The value that is within 1% of everything in the bin.
fn value_of(bin: i32) -> f64 {
    2.0 * GAMMA.powi(bin) / (GAMMA + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(f64::total_cmp);
        let rank = ((q * values.len() as f64).ceil() as usize).max(1);
        values[rank - 1]
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut rng = fastrand_like(7);
        let mut values: Vec<f64> = (0..20_000).map(|_| 1.0 + rng() * 5000.0).collect();
        values.extend((0..200).map(|_| 20_000.0 + rng() * 1000.0));
        let mut sketch = Sketch::default();
        values.iter().for_each(|v| sketch.add(*v));
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            let truth = exact(&mut values, q);
            let estimate = sketch.quantile(q).unwrap();
            assert!(
                (estimate - truth).abs() <= truth * 0.01,
                "q{q}: {estimate} vs {truth}"
            );
        }
    }

    #[test]
    fn merging_equals_adding_everything_to_one() {
        let (mut a, mut b, mut both) = (Sketch::default(), Sketch::default(), Sketch::default());
        for v in [0.0, 3.0, 10.0, 250.0] {
            a.add(v);
            both.add(v);
        }
        for v in [1.0, 999.0] {
            b.add(v);
            both.add(v);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(a.quantile(0.0001), Some(0.0));
        assert_eq!(Sketch::default().quantile(0.95), None);
    }

    /// A deterministic generator, so the test needs no dependency.
    fn fastrand_like(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}
