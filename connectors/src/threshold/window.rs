//! A sliding window kept incrementally: the window is cut into
//! `SLOTS_PER_WINDOW` slots, each holding the aggregates of its samples,
//! in a ring. Adding a sample touches one slot; reading the window merges
//! at most `SLOTS_PER_WINDOW` of them. Nothing is ever rescanned.

use super::sketch::Sketch;

/// Slots per window: the window slides in steps of a twelfth of itself
/// (25 s for 5 minutes, 5 minutes for an hour).
pub const SLOTS_PER_WINDOW: u64 = 12;

/// What a rule adds to its window: one span, or one histogram data
/// point's worth of calls.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub count: u64,
    pub failed: u64,
    pub sum: f64,
    pub max: f64,
    /// How the values spread, for the quantile sketch.
    pub spread: Spread<'a>,
    /// Worth naming in the alert: a failure, or a value past the warning
    /// threshold.
    pub notable: bool,
    /// Empty for a metric data point.
    pub trace_id: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub enum Spread<'a> {
    One(f64),
    /// An OTLP explicit-bucket histogram: `counts` has one more entry than
    /// `bounds`; each bucket's calls count at its midpoint (the first at
    /// half its bound, the overflow at the last bound), times `scale`.
    Buckets {
        bounds: &'a [f64],
        counts: &'a [u64],
        scale: f64,
    },
}

impl Sample<'_> {
    /// One span's value.
    pub fn one(value: f64, failed: bool, notable: bool, trace_id: &[u8]) -> Sample<'_> {
        Sample {
            count: 1,
            failed: u64::from(failed),
            sum: value,
            max: value,
            spread: Spread::One(value),
            notable,
            trace_id,
        }
    }
}

impl Spread<'_> {
    fn add_to(&self, sketch: &mut Sketch) {
        match *self {
            Spread::One(value) => sketch.add(value),
            Spread::Buckets {
                bounds,
                counts,
                scale,
            } => {
                for (index, count) in counts.iter().enumerate() {
                    let upper = bounds.get(index).copied();
                    let lower = index.checked_sub(1).and_then(|i| bounds.get(i)).copied();
                    let value = match (lower, upper) {
                        (Some(lower), Some(upper)) => (lower + upper) / 2.0,
                        (None, Some(upper)) => upper / 2.0,
                        (Some(lower), None) => lower,
                        (None, None) => 0.0,
                    };
                    sketch.add_many(value * scale, *count);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Which slot of time this is; stale once older than a window.
    index: u64,
    count: u64,
    failed: u64,
    sum: f64,
    max: f64,
    sketch: Option<Sketch>,
    examples: Vec<[u8; 16]>,
}

/// The aggregates of a window's samples.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: u64,
    pub failed: u64,
    pub sum: f64,
    pub max: f64,
    pub sketch: Option<Sketch>,
    /// Newest last.
    pub examples: Vec<[u8; 16]>,
}

#[derive(Debug, Clone)]
pub struct Window {
    slots: Vec<Slot>,
    keep_sketch: bool,
    max_examples: usize,
}

impl Window {
    pub fn new(keep_sketch: bool, max_examples: usize) -> Window {
        Window {
            slots: vec![Slot::default(); SLOTS_PER_WINDOW as usize],
            keep_sketch,
            max_examples,
        }
    }

    pub fn add(&mut self, index: u64, sample: Sample) {
        let slot = &mut self.slots[(index % SLOTS_PER_WINDOW) as usize];
        if slot.index != index || slot.count == 0 {
            *slot = Slot {
                index,
                sketch: self.keep_sketch.then(Sketch::default),
                ..Slot::default()
            };
        }
        slot.count += sample.count;
        slot.failed += sample.failed;
        slot.sum += sample.sum;
        slot.max = slot.max.max(sample.max);
        if let Some(sketch) = &mut slot.sketch {
            sample.spread.add_to(sketch);
        }
        if sample.notable
            && self.max_examples > 0
            && let Ok(trace_id) = <[u8; 16]>::try_from(sample.trace_id)
            && slot.examples.last() != Some(&trace_id)
        {
            if slot.examples.len() == self.max_examples {
                slot.examples.remove(0);
            }
            slot.examples.push(trace_id);
        }
    }

    /// The samples of the window that ends with slot `current`.
    pub fn summary(&self, current: u64) -> Summary {
        let mut live: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.count > 0 && s.index <= current && s.index + SLOTS_PER_WINDOW > current)
            .collect();
        live.sort_by_key(|s| s.index);
        let mut summary = Summary {
            sketch: self.keep_sketch.then(Sketch::default),
            ..Summary::default()
        };
        for slot in live {
            summary.count += slot.count;
            summary.failed += slot.failed;
            summary.sum += slot.sum;
            summary.max = summary.max.max(slot.max);
            if let (Some(total), Some(sketch)) = (&mut summary.sketch, &slot.sketch) {
                total.merge(sketch);
            }
            summary.examples.extend(&slot.examples);
        }
        summary.examples = newest_distinct(&summary.examples, self.max_examples);
        summary
    }

    /// The sum of the samples in slots `first..first + SLOTS_PER_WINDOW`,
    /// for as long as they have not been overwritten.
    pub fn sum_of_window_from(&self, first: u64) -> f64 {
        self.slots
            .iter()
            .filter(|s| s.count > 0 && s.index >= first && s.index < first + SLOTS_PER_WINDOW)
            .map(|s| s.sum)
            .sum()
    }

    /// No sample in the window ending at `current`.
    pub fn is_empty_at(&self, current: u64) -> bool {
        !self
            .slots
            .iter()
            .any(|s| s.count > 0 && s.index + SLOTS_PER_WINDOW > current)
    }
}

/// The last `max` distinct ids, oldest first.
fn newest_distinct(ids: &[[u8; 16]], max: usize) -> Vec<[u8; 16]> {
    let mut kept: Vec<[u8; 16]> = Vec::with_capacity(max);
    for id in ids.iter().rev() {
        if kept.len() == max {
            break;
        }
        if !kept.contains(id) {
            kept.push(*id);
        }
    }
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [[u8; 16]; 9] = [
        [0; 16], [1; 16], [2; 16], [3; 16], [4; 16], [5; 16], [6; 16], [7; 16], [8; 16],
    ];

    fn sample(value: f64, failed: bool) -> Sample<'static> {
        Sample::one(value, failed, failed, &IDS[value as usize])
    }

    #[test]
    fn the_window_slides_slot_by_slot() {
        let mut window = Window::new(false, 2);
        window.add(0, sample(1.0, true));
        window.add(5, sample(2.0, false));
        window.add(11, sample(4.0, true));
        let all = window.summary(11);
        assert_eq!((all.count, all.failed, all.sum, all.max), (3, 2, 7.0, 4.0));
        assert_eq!(all.examples, vec![[1; 16], [4; 16]]);
        // Slot 0 leaves the window at slot 12.
        assert_eq!(window.summary(12).count, 2);
        window.add(12, sample(8.0, false));
        assert_eq!(window.summary(12).sum, 14.0);
        assert!(!window.is_empty_at(22));
        assert!(window.is_empty_at(24));
        assert_eq!(window.sum_of_window_from(0), 6.0);
    }

    #[test]
    fn a_histogram_point_adds_its_calls_at_their_buckets() {
        let mut window = Window::new(true, 0);
        let bounds = [0.1, 0.5, 1.0];
        let counts = [10, 80, 8, 2];
        window.add(
            0,
            Sample {
                count: 100,
                failed: 3,
                sum: 30_000.0,
                max: 1000.0,
                spread: Spread::Buckets {
                    bounds: &bounds,
                    counts: &counts,
                    scale: 1000.0,
                },
                notable: true,
                trace_id: &[],
            },
        );
        let summary = window.summary(0);
        assert_eq!((summary.count, summary.failed), (100, 3));
        assert!(summary.examples.is_empty());
        // The 95th call is in (0.5 s, 1 s]: counted at 750 ms.
        let p95 = summary.sketch.unwrap().quantile(0.95).unwrap();
        assert!((p95 - 750.0).abs() < 10.0, "{p95}");
    }
}
