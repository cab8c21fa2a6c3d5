//! The freshness judge: the one rule that decides whether a derived row is
//! fresh and, if not, why. Planning, `get`, `explain` and `status` all ask
//! it, so that they cannot disagree.
//!
//! A derived row is **fresh** when it is stored, every input row exists and
//! is itself settled, the `changed_at` it recorded for each input equals
//! the input's current one, its code version is current, and it computed
//! successfully. A row that failed (or is blocked) on unchanged inputs and
//! code is settled too: it is not run again until something changes (or
//! on request). Everything else is stale, for the first of these causes:
//! missing, an input that is not settled (upstream stale), an input that
//! changed, a row read through the function's `ctx` that changed (or
//! appeared, or was deleted), the code that changed.
//!
//! The judge looks at one row. Whether the rows a row *read* are settled
//! themselves is asked row by row, through their own reads (see
//! `engine::deps`): a row is settled when the judge settles it and every
//! row it is computed from or read is settled.

use crate::storage::{RecordedRead, Revision, RowState, RowStatus};

/// What the judge decides about one derived row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Computed from the current inputs with the current code.
    Fresh,
    /// Failed, on unchanged inputs and code.
    Failed,
    /// Blocked by a failed input, on unchanged inputs and code.
    Blocked,
    /// Needs computing, for this cause.
    Stale(Cause),
    /// Would need computing, but its root row changed less than `settle`
    /// ago: left for later.
    Settling(Cause),
}

/// Why a row is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Never computed (or deleted since).
    Missing,
    /// Input number `n` (in parameter order) is missing or not settled.
    UpstreamStale(usize),
    /// Input number `n` changed since the row was computed.
    InputChanged(usize),
    /// Recorded read number `n` no longer holds: the row read changed,
    /// appeared or was deleted since.
    ReadChanged(usize),
    /// The function's code version changed.
    CodeChanged,
}

impl Verdict {
    /// True when nothing is to be done (fresh, or failed or blocked on
    /// unchanged inputs).
    pub fn is_settled(self) -> bool {
        matches!(self, Verdict::Fresh | Verdict::Failed | Verdict::Blocked)
    }

    /// The cause, for a row that is not settled.
    pub fn cause(self) -> Option<Cause> {
        match self {
            Verdict::Stale(c) | Verdict::Settling(c) => Some(c),
            _ => None,
        }
    }
}

/// What the judge knows about one input of a row.
#[derive(Debug, Clone, Copy)]
pub struct InputView<'a> {
    /// The input row, if it exists.
    pub state: Option<&'a RowState>,
    /// Whether the input row is settled itself: always for input tables;
    /// for derived inputs, the judge's verdict on them (or, while planning
    /// a refresh pass that has just processed the upstream tables, `true`).
    pub settled: bool,
}

/// The `settle` window of a row's function, if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// When the root row last changed (ms since the Unix epoch).
    pub root_changed_ms: i64,
    /// The window, in ms.
    pub settle_ms: i64,
    /// Now (ms since the Unix epoch).
    pub now_ms: i64,
}

impl Settle {
    fn waiting(&self) -> bool {
        self.settle_ms > 0 && self.now_ms < self.root_changed_ms.saturating_add(self.settle_ms)
    }
}

/// The verdict on one derived row, from its stored state, its inputs (in
/// parameter order), the current code version of its function and its
/// `settle` window (`None` when it has none, or for explicit demand, which
/// does not wait).
pub fn judge(
    row: Option<&RowState>,
    inputs: &[InputView<'_>],
    code: Option<&str>,
    settle: Option<Settle>,
) -> Verdict {
    judge_with_reads(row, inputs, &[], code, settle)
}

/// Like [`judge`], for a row that recorded reads (`reads`, each with the
/// read row's `changed_at` now).
pub fn judge_with_reads(
    row: Option<&RowState>,
    inputs: &[InputView<'_>],
    reads: &[RecordedRead],
    code: Option<&str>,
    settle: Option<Settle>,
) -> Verdict {
    let verdict = judge_now(row, inputs, reads, code);
    match verdict {
        Verdict::Stale(cause) if settle.is_some_and(|s| s.waiting()) => Verdict::Settling(cause),
        v => v,
    }
}

fn judge_now(
    row: Option<&RowState>,
    inputs: &[InputView<'_>],
    reads: &[RecordedRead],
    code: Option<&str>,
) -> Verdict {
    let Some(row) = row else {
        return Verdict::Stale(Cause::Missing);
    };
    if let Some(j) = inputs.iter().position(|i| i.state.is_none() || !i.settled) {
        return Verdict::Stale(Cause::UpstreamStale(j));
    }
    let current = inputs.iter().map(|i| i.state.map(|s| s.changed_at));
    for (j, now) in current.enumerate() {
        if row.ins.get(j).copied() != now {
            return Verdict::Stale(Cause::InputChanged(j));
        }
    }
    if let Some(n) = reads.iter().position(|r| r.read.seen != r.now) {
        return Verdict::Stale(Cause::ReadChanged(n));
    }
    if row.code.as_deref() != code {
        return Verdict::Stale(Cause::CodeChanged);
    }
    match row.status {
        RowStatus::Ok => Verdict::Fresh,
        RowStatus::Failed { .. } => Verdict::Failed,
        RowStatus::Blocked { .. } => Verdict::Blocked,
    }
}

/// The `changed_at` of each input, when every input exists.
pub fn input_revisions(inputs: &[InputView<'_>]) -> Option<Vec<Revision>> {
    inputs
        .iter()
        .map(|i| i.state.map(|s| s.changed_at))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ins: &[i64], code: &str, status: RowStatus) -> RowState {
        RowState {
            changed_at: Revision::new(1),
            status,
            code: Some(code.into()),
            ins: ins.iter().map(|&i| Revision::new(i)).collect(),
            values: vec![],
            changed_ms: 0,
        }
    }

    fn input(changed_at: i64) -> RowState {
        RowState {
            changed_at: Revision::new(changed_at),
            status: RowStatus::Ok,
            code: None,
            ins: vec![],
            values: vec![],
            changed_ms: 1_000,
        }
    }

    #[test]
    fn causes_come_in_order() {
        let a = input(3);
        let ok = [InputView {
            state: Some(&a),
            settled: true,
        }];
        let r = row(&[3], "c1", RowStatus::Ok);
        assert_eq!(
            judge(None, &ok, Some("c1"), None),
            Verdict::Stale(Cause::Missing)
        );
        assert_eq!(judge(Some(&r), &ok, Some("c1"), None), Verdict::Fresh);
        assert_eq!(
            judge(Some(&r), &ok, Some("c2"), None),
            Verdict::Stale(Cause::CodeChanged)
        );
        let old = row(&[2], "c2", RowStatus::Ok);
        // An input change is named before a code change.
        assert_eq!(
            judge(Some(&old), &ok, Some("c1"), None),
            Verdict::Stale(Cause::InputChanged(0))
        );
        let unsettled = [InputView {
            state: Some(&a),
            settled: false,
        }];
        assert_eq!(
            judge(Some(&r), &unsettled, Some("c1"), None),
            Verdict::Stale(Cause::UpstreamStale(0))
        );
        let missing = [InputView {
            state: None,
            settled: true,
        }];
        assert_eq!(
            judge(Some(&r), &missing, Some("c1"), None),
            Verdict::Stale(Cause::UpstreamStale(0))
        );
        let failed = row(
            &[3],
            "c1",
            RowStatus::Failed {
                message: "x".into(),
            },
        );
        assert_eq!(judge(Some(&failed), &ok, Some("c1"), None), Verdict::Failed);
    }

    #[test]
    fn a_read_that_no_longer_holds_is_named_after_the_inputs() {
        use crate::graph::TableId;
        use crate::storage::Read;
        let a = input(3);
        let ok = [InputView {
            state: Some(&a),
            settled: true,
        }];
        let r = row(&[3], "c1", RowStatus::Ok);
        let read = |seen: Option<i64>, now: Option<i64>| RecordedRead {
            read: Read {
                table: TableId::from_index(0),
                key: "f".into(),
                seen: seen.map(Revision::new),
            },
            now: now.map(Revision::new),
        };
        let holds = [read(Some(2), Some(2)), read(None, None)];
        assert_eq!(
            judge_with_reads(Some(&r), &ok, &holds, Some("c1"), None),
            Verdict::Fresh
        );
        for (seen, now) in [(Some(2), Some(5)), (None, Some(5)), (Some(2), None)] {
            let reads = [read(Some(1), Some(1)), read(seen, now)];
            assert_eq!(
                judge_with_reads(Some(&r), &ok, &reads, Some("c1"), None),
                Verdict::Stale(Cause::ReadChanged(1))
            );
            // An input change comes first.
            let old = row(&[2], "c1", RowStatus::Ok);
            assert_eq!(
                judge_with_reads(Some(&old), &ok, &reads, Some("c1"), None),
                Verdict::Stale(Cause::InputChanged(0))
            );
        }
    }

    #[test]
    fn settle_delays_only_stale_rows() {
        let a = input(3);
        let ok = [InputView {
            state: Some(&a),
            settled: true,
        }];
        let settle = Settle {
            root_changed_ms: 1_000,
            settle_ms: 500,
            now_ms: 1_200,
        };
        assert_eq!(
            judge(None, &ok, Some("c"), Some(settle)),
            Verdict::Settling(Cause::Missing)
        );
        let r = row(&[3], "c", RowStatus::Ok);
        assert_eq!(
            judge(Some(&r), &ok, Some("c"), Some(settle)),
            Verdict::Fresh
        );
        let later = Settle {
            now_ms: 1_500,
            ..settle
        };
        assert_eq!(
            judge(None, &ok, Some("c"), Some(later)),
            Verdict::Stale(Cause::Missing)
        );
    }
}
