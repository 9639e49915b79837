//! The trace window: holds runs until their ancestors are known, because
//! a run's `dotted_order` is the start time and id of every ancestor, root
//! first, and OTLP spans arrive children first (a parent ends, and is
//! exported, after its children).
//!
//! A run leaves as soon as its parent is placed; placing a run releases
//! the children that waited for it. A root span takes the trace's UUID as
//! its run id, as LangSmith roots do. Runs whose parent never comes (it
//! was not sampled, or went to another collector) are held `hold_for`
//! and then promoted: the earliest becomes the root if the trace has
//! none, and the rest become its children, so nothing is lost and every
//! run keeps a valid dotted order. When more than `max_held_runs` wait,
//! the oldest traces are promoted early.
//!
//! A trace's placed runs are forgotten `forget_after` it was last seen,
//! but its root is remembered longer (`remembered_roots` of them), so a
//! straggler still lands under the right root rather than claiming the
//! root's id a second time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::run::{Draft, Run, trace_uuid};

type TraceId = [u8; 16];
type SpanId = [u8; 8];

#[derive(Debug, Clone)]
pub struct WindowConfig {
    pub hold_for: Duration,
    pub max_held_runs: usize,
    pub forget_after: Duration,
    pub remembered_roots: usize,
}

/// Where a placed run sits: what its children need.
#[derive(Debug, Clone)]
struct Placed {
    run_id: Uuid,
    dotted_order: String,
}

struct TraceState {
    root: Option<Placed>,
    placed: HashMap<SpanId, Placed>,
    /// Held drafts by the parent span they wait for.
    waiting: HashMap<SpanId, Vec<Draft>>,
    held: usize,
    waiting_since: Option<Instant>,
    last_seen: Instant,
}

pub struct TraceWindow {
    config: WindowConfig,
    traces: HashMap<TraceId, TraceState>,
    /// Traces in the order they started holding runs. An entry whose
    /// time no longer matches its trace's `waiting_since` is stale.
    holding_order: VecDeque<(Instant, TraceId)>,
    held: usize,
    roots: HashMap<TraceId, Placed>,
    roots_order: VecDeque<TraceId>,
    last_sweep: Option<Instant>,
    /// Runs whose parent never came, since the last `take_orphans`.
    orphans: u64,
}

impl TraceWindow {
    pub fn new(config: WindowConfig) -> TraceWindow {
        TraceWindow {
            config,
            traces: HashMap::new(),
            holding_order: VecDeque::new(),
            held: 0,
            roots: HashMap::new(),
            roots_order: VecDeque::new(),
            last_sweep: None,
            orphans: 0,
        }
    }

    /// Runs held for their ancestors.
    pub fn held(&self) -> usize {
        self.held
    }

    pub fn take_orphans(&mut self) -> u64 {
        std::mem::take(&mut self.orphans)
    }

    /// Adds a span's draft; the runs it completes are pushed to `out`.
    pub fn add(&mut self, draft: Draft, now: Instant, out: &mut Vec<Run>) {
        let trace = draft.trace_id;
        let state = trace_state(&mut self.traces, &self.roots, trace, now);
        if draft.given.complete() {
            let placed = Placed {
                run_id: draft.derived_run_id(),
                dotted_order: draft.given.dotted_order.clone().unwrap_or_default(),
            };
            let span_id = draft.span_id;
            if let Some(run) = draft.into_given_run() {
                out.push(run);
            }
            self.held -= release(state, span_id, placed, out);
        } else {
            match draft.parent_span_id {
                None => self.held -= place(state, draft, None, out),
                Some(parent) => match state.placed.get(&parent).cloned() {
                    Some(placed) => self.held -= place(state, draft, Some(placed), out),
                    None => self.hold(trace, draft, now),
                },
            }
        }
        if let Some(state) = self.traces.get_mut(&trace)
            && state.held == 0
        {
            state.waiting_since = None;
        }
        if self.held > self.config.max_held_runs {
            self.expire(now, out);
        }
    }

    /// Promotes the runs of traces that waited `hold_for`, or the oldest
    /// while too many are held, and forgets idle traces.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Run>) {
        while let Some(&(since, trace)) = self.holding_order.front() {
            let due = since + self.config.hold_for <= now;
            if !due && self.held <= self.config.max_held_runs {
                break;
            }
            self.holding_order.pop_front();
            self.promote(trace, since, out);
        }
        self.sweep(now);
    }

    /// Promotes everything held: at shutdown.
    pub fn flush(&mut self, out: &mut Vec<Run>) {
        while let Some((since, trace)) = self.holding_order.pop_front() {
            self.promote(trace, since, out);
        }
    }

    fn hold(&mut self, trace: TraceId, draft: Draft, now: Instant) {
        let Some(state) = self.traces.get_mut(&trace) else {
            return;
        };
        let parent = draft.parent_span_id.unwrap_or_default();
        state.waiting.entry(parent).or_default().push(draft);
        state.held += 1;
        self.held += 1;
        if state.waiting_since.is_none() {
            state.waiting_since = Some(now);
            self.holding_order.push_back((now, trace));
        }
    }

    /// Places every held run of a trace, the earliest run whose parent is
    /// missing first.
    fn promote(&mut self, trace: TraceId, since: Instant, out: &mut Vec<Run>) {
        let Some(state) = self.traces.get_mut(&trace) else {
            return;
        };
        if state.waiting_since != Some(since) {
            return;
        }
        while let Some(parent) = next_missing_parent(state) {
            let mut drafts = state.waiting.remove(&parent).unwrap_or_default();
            state.held -= drafts.len();
            self.held -= drafts.len();
            drafts.sort_by_key(|draft| draft.start_unix_nano);
            for draft in drafts {
                self.orphans += 1;
                self.held -= place(state, draft, None, out);
            }
        }
        state.waiting_since = None;
    }

    /// Forgets traces idle for `forget_after`, at most every tenth of it,
    /// remembering their roots.
    fn sweep(&mut self, now: Instant) {
        let period = self.config.forget_after / 10;
        if self.last_sweep.is_some_and(|last| last + period > now) {
            return;
        }
        self.last_sweep = Some(now);
        let forget_after = self.config.forget_after;
        let mut forgotten = Vec::new();
        self.traces.retain(|trace, state| {
            let keep = state.held > 0 || state.last_seen + forget_after > now;
            if !keep && let Some(root) = state.root.take() {
                forgotten.push((*trace, root));
            }
            keep
        });
        for (trace, root) in forgotten {
            self.remember_root(trace, root);
        }
    }

    fn remember_root(&mut self, trace: TraceId, root: Placed) {
        if self.roots.insert(trace, root).is_none() {
            self.roots_order.push_back(trace);
        }
        while self.roots_order.len() > self.config.remembered_roots {
            if let Some(oldest) = self.roots_order.pop_front() {
                self.roots.remove(&oldest);
            }
        }
    }
}

/// A trace's state, new ones starting from a remembered root.
fn trace_state<'a>(
    traces: &'a mut HashMap<TraceId, TraceState>,
    roots: &HashMap<TraceId, Placed>,
    trace: TraceId,
    now: Instant,
) -> &'a mut TraceState {
    let state = traces.entry(trace).or_insert_with(|| TraceState {
        root: roots.get(&trace).cloned(),
        placed: HashMap::new(),
        waiting: HashMap::new(),
        held: 0,
        waiting_since: None,
        last_seen: now,
    });
    state.last_seen = now;
    state
}

/// A parent span that held runs wait for and that is not itself held
/// (the top of a detached subtree); any waited-for parent if every one is
/// held, which only a cycle of parent ids can cause.
fn next_missing_parent(state: &TraceState) -> Option<SpanId> {
    let held: HashSet<SpanId> = state
        .waiting
        .values()
        .flatten()
        .map(|draft| draft.span_id)
        .collect();
    let earliest = |parent: &&SpanId| {
        state.waiting[*parent]
            .iter()
            .map(|draft| draft.start_unix_nano)
            .min()
    };
    let tops = state
        .waiting
        .keys()
        .filter(|parent| !held.contains(*parent));
    tops.min_by_key(earliest)
        .or_else(|| state.waiting.keys().min_by_key(earliest))
        .copied()
}

/// Places a draft under `parent`, or as the root when it has none (under
/// the root when the trace has one already), then releases the runs that
/// waited for it. Returns how many held runs were released.
fn place(
    state: &mut TraceState,
    draft: Draft,
    parent: Option<Placed>,
    out: &mut Vec<Run>,
) -> usize {
    let trace = draft
        .given
        .trace_id
        .unwrap_or_else(|| trace_uuid(&draft.trace_id));
    let span_id = draft.span_id;
    let (run_id, parent, dotted_order) = match parent.or_else(|| state.root.clone()) {
        Some(parent) => {
            let run_id = draft.derived_run_id();
            let dotted = format!("{}.{}", parent.dotted_order, draft.segment(run_id));
            (run_id, Some(parent.run_id), dotted)
        }
        None => {
            let run_id = trace;
            let dotted = draft.segment(run_id);
            state.root = Some(Placed {
                run_id,
                dotted_order: dotted.clone(),
            });
            (run_id, None, dotted)
        }
    };
    let placed = Placed {
        run_id,
        dotted_order: dotted_order.clone(),
    };
    out.push(draft.into_run(run_id, trace, parent, dotted_order));
    release(state, span_id, placed, out)
}

/// Records a placed span and places, depth first, every run that waited
/// for it. Returns how many held runs were released.
fn release(state: &mut TraceState, span_id: SpanId, placed: Placed, out: &mut Vec<Run>) -> usize {
    state.placed.insert(span_id, placed.clone());
    let Some(children) = state.waiting.remove(&span_id) else {
        return 0;
    };
    state.held -= children.len();
    let mut released = children.len();
    for child in children {
        released += place(state, child, Some(placed.clone()), out);
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::langsmith::run::{GivenIds, derive_run_id};
    use serde_json::value::RawValue;

    fn config() -> WindowConfig {
        WindowConfig {
            hold_for: Duration::from_secs(30),
            max_held_runs: 1_000,
            forget_after: Duration::from_secs(60),
            remembered_roots: 100,
        }
    }

    fn draft(trace: u8, span: u8, parent: Option<u8>, start: u64) -> Draft {
        Draft {
            trace_id: [trace; 16],
            span_id: [span; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            start_unix_nano: start * 1_000,
            given: GivenIds::default(),
            name: format!("span-{span}"),
            run_type: "chain",
            end_unix_nano: start * 1_000 + 500,
            session_name: "p".into(),
            tags: Vec::new(),
            inputs: RawValue::from_string("{}".into()).unwrap(),
            outputs: None,
            extra: RawValue::from_string("{}".into()).unwrap(),
            error: None,
            events: None,
        }
    }

    fn names(runs: &[Run]) -> Vec<&str> {
        runs.iter().map(|run| run.core.name.as_str()).collect()
    }

    #[test]
    fn children_wait_for_the_root_and_leave_parent_first() {
        let mut window = TraceWindow::new(config());
        let now = Instant::now();
        let mut out = Vec::new();
        window.add(draft(1, 3, Some(2), 3), now, &mut out);
        window.add(draft(1, 2, Some(1), 2), now, &mut out);
        assert!(out.is_empty());
        assert_eq!(window.held(), 2);
        window.add(draft(1, 1, None, 1), now, &mut out);
        assert_eq!(names(&out), ["span-1", "span-2", "span-3"]);
        assert_eq!(window.held(), 0);

        let (root, child, grandchild) = (&out[0].core, &out[1].core, &out[2].core);
        assert_eq!(root.id, trace_uuid(&[1; 16]));
        assert_eq!(root.trace_id, root.id);
        assert_eq!(root.parent_run_id, None);
        assert_eq!(child.parent_run_id, Some(root.id));
        assert_eq!(child.id, derive_run_id(&[1; 16], &[2; 8]));
        assert_eq!(grandchild.parent_run_id, Some(child.id));
        assert!(
            grandchild
                .dotted_order
                .starts_with(&format!("{}.", child.dotted_order))
        );
        assert_eq!(grandchild.dotted_order.split('.').count(), 3);
        assert!(root.dotted_order.ends_with(&root.id.to_string()));

        // A late child of a placed span leaves at once.
        let mut late = Vec::new();
        window.add(draft(1, 4, Some(1), 4), now, &mut late);
        assert_eq!(late[0].core.parent_run_id, Some(root.id));
    }

    #[test]
    fn orphans_are_promoted_after_hold_for_without_loss() {
        let mut window = TraceWindow::new(config());
        let start = Instant::now();
        let mut out = Vec::new();
        window.add(draft(2, 5, Some(9), 5), start, &mut out);
        window.add(draft(2, 6, Some(5), 6), start, &mut out);
        window.add(draft(2, 7, Some(8), 4), start, &mut out);
        window.expire(start + Duration::from_secs(29), &mut out);
        assert!(out.is_empty());
        window.expire(start + Duration::from_secs(30), &mut out);
        // The earliest detached run becomes the root; the rest hang under it.
        assert_eq!(names(&out), ["span-7", "span-5", "span-6"]);
        assert_eq!(out[0].core.id, trace_uuid(&[2; 16]));
        assert_eq!(out[1].core.parent_run_id, Some(out[0].core.id));
        assert_eq!(out[2].core.parent_run_id, Some(out[1].core.id));
        assert_eq!(window.take_orphans(), 2);
        assert_eq!(window.held(), 0);
    }

    #[test]
    fn a_parent_cycle_cannot_hold_runs_forever() {
        let mut window = TraceWindow::new(config());
        let now = Instant::now();
        let mut out = Vec::new();
        window.add(draft(3, 1, Some(2), 1), now, &mut out);
        window.add(draft(3, 2, Some(1), 2), now, &mut out);
        window.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(window.held(), 0);
    }

    #[test]
    fn too_many_held_runs_promote_the_oldest_trace() {
        let mut window = TraceWindow::new(WindowConfig {
            max_held_runs: 2,
            ..config()
        });
        let now = Instant::now();
        let mut out = Vec::new();
        window.add(draft(4, 1, Some(9), 1), now, &mut out);
        window.add(draft(5, 1, Some(9), 1), now, &mut out);
        assert!(out.is_empty());
        window.add(draft(6, 1, Some(9), 1), now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].core.trace_id, trace_uuid(&[4; 16]));
        assert_eq!(window.held(), 2);
    }

    #[test]
    fn a_forgotten_trace_keeps_its_root_for_stragglers() {
        let mut window = TraceWindow::new(config());
        let start = Instant::now();
        let mut out = Vec::new();
        window.add(draft(7, 1, None, 1), start, &mut out);
        window.expire(start + Duration::from_secs(61), &mut out);
        assert!(window.traces.is_empty());
        // The straggler's parent is forgotten: it waits, then lands under
        // the remembered root instead of becoming a second root.
        let later = start + Duration::from_secs(62);
        window.add(draft(7, 2, Some(3), 2), later, &mut out);
        window.expire(later + Duration::from_secs(30), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].core.parent_run_id, Some(trace_uuid(&[7; 16])));
        assert_ne!(out[1].core.id, out[0].core.id);
    }

    #[test]
    fn given_ids_pass_through_and_anchor_children() {
        let mut window = TraceWindow::new(config());
        let now = Instant::now();
        let mut out = Vec::new();
        let run_id = Uuid::from_u128(42);
        let mut given = draft(8, 1, None, 1);
        given.given = GivenIds {
            trace_id: Some(run_id),
            run_id: Some(run_id),
            parent_run_id: None,
            dotted_order: Some("20240101T000000000000Z0000".into()),
        };
        window.add(draft(8, 2, Some(1), 2), now, &mut out);
        window.add(given, now, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].core.id, run_id);
        assert_eq!(out[1].core.parent_run_id, Some(run_id));
        assert_eq!(window.held(), 0);
    }
}
