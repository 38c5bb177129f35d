//! The journal's types: bundle and command states and rows, admission classes, outcomes.
//!
//! A bundle's sequence stream is (issuer key id, recipient), where the recipient is a vessel id or
//! `*`. `streams.next_seq` is the next sequence to apply; every sequence below it is either held
//! by a journaled bundle or recorded in `skipped` (given up on after the gap timeout). So a file
//! whose sequence is below `next_seq` is a replay unless it fills a skipped slot, in which case it
//! is a late arrival: applied, with each command deciding whether newer sequences superseded it.
//! The transitions live in `sequence.rs` (admission, order, gaps) and `transitions.rs` (command
//! runs); the read side in `queries.rs`.

/// Bundle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleState {
    /// Arrived ahead of a missing sequence.
    Waiting,
    /// Its commands may run.
    Ready,
    /// Every command finished, none failed.
    Done,
    /// Every command finished, at least one failed.
    Failed,
}

/// Command states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// May run.
    Ready,
    /// Started; if the agent died, it is resumed (commands are idempotent).
    Running,
    /// Held until `next_attempt_at`, with a reason.
    Waiting,
    /// Took effect.
    Done,
    /// Failed for good, with the error.
    Failed,
    /// Not applied: a newer sequence already acted on the same objects.
    Superseded,
    /// Not applied: the same command id was applied from another bundle.
    Duplicate,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),* } }
            pub(super) fn parse(s: &str) -> Self {
                match s { $($s => Self::$v,)* _ => Self::Failed }
            }
        }
    };
}
str_enum!(BundleState { Waiting = "waiting", Ready = "ready", Done = "done", Failed = "failed" });
str_enum!(CommandState {
    Ready = "ready", Running = "running", Waiting = "waiting", Done = "done",
    Failed = "failed", Superseded = "superseded", Duplicate = "duplicate",
});
impl CommandState {
    /// True once nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Done | Self::Failed | Self::Superseded | Self::Duplicate
        )
    }
}

/// A verified bundle to record.
#[derive(Debug, Clone)]
pub struct NewBundle {
    /// Bundle id.
    pub id: String,
    /// Issuer key id.
    pub issuer: String,
    /// Recipient (vessel id or `*`).
    pub recipient: String,
    /// Sequence.
    pub sequence: u64,
    /// Hash of the signed manifest.
    pub manifest_sha256: String,
    /// File name it arrived as.
    pub source_name: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Its commands in order.
    pub commands: Vec<NewCommand>,
}

/// A command to record.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// Command id.
    pub cmd_id: String,
    /// Type.
    pub kind: String,
    /// Arguments, JSON object text.
    pub args: String,
    /// Files, JSON array text.
    pub files: String,
}

/// How a verified bundle relates to what the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// This bundle id is already journaled.
    Known {
        /// Same manifest bytes.
        same_content: bool,
        /// Its file was already moved to the archive (else: finishing an interrupted admission).
        archived: bool,
    },
    /// The sequence was used or passed.
    Replay {
        /// What had it, in words.
        previous: String,
    },
    /// Fills a sequence skipped after the gap timeout.
    Late,
    /// The next expected sequence.
    InOrder,
    /// Ahead of the next expected sequence.
    Early {
        /// The first missing sequence.
        missing: u64,
    },
}

/// A journaled bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleRow {
    /// Id.
    pub id: String,
    /// Issuer key id.
    pub issuer: String,
    /// Recipient.
    pub recipient: String,
    /// Sequence.
    pub sequence: u64,
    /// State.
    pub state: BundleState,
    /// Why it waits, or why it failed.
    pub reason: Option<String>,
    /// Arrived after its sequence was skipped.
    pub late: bool,
    /// When it was journaled.
    pub received_at: i64,
}

/// A journaled command.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandRow {
    /// Its bundle.
    pub bundle_id: String,
    /// Position in the bundle.
    pub idx: i64,
    /// Command id.
    pub cmd_id: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Arguments (JSON text).
    #[serde(skip)]
    pub args: String,
    /// Files (JSON text).
    #[serde(skip)]
    pub files: String,
    /// State.
    pub state: CommandState,
    /// Reason for waiting/failing, or a note on completion.
    pub reason: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// When a waiting command is retried.
    pub next_attempt_at: Option<i64>,
    /// Issuer of its bundle.
    pub issuer: String,
    /// Recipient of its bundle.
    pub recipient: String,
    /// Sequence of its bundle.
    pub sequence: u64,
    /// Whether its bundle arrived late.
    pub late: bool,
}

/// How a command attempt ended.
#[derive(Debug, Clone)]
pub enum CommandOutcome {
    /// Took effect; an optional note for the audit trail.
    Done(String),
    /// Nothing applied because newer sequences already acted.
    Superseded(String),
    /// Failed for good.
    Failed(String),
    /// Try again at `retry_at`.
    Waiting {
        /// Why, in words.
        reason: String,
        /// When to look again.
        retry_at: i64,
    },
}

/// A stream that is waiting for a missing sequence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamGap {
    /// Issuer key id.
    pub issuer: String,
    /// Recipient.
    pub recipient: String,
    /// First missing sequence.
    pub missing: u64,
    /// Bundles waiting behind it.
    pub waiting: u64,
    /// Since when the oldest of them waits.
    pub since: i64,
}

/// A summary of the journal for `status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Overview {
    /// Bundles per state.
    pub bundles: std::collections::BTreeMap<String, u64>,
    /// Commands per state.
    pub commands: std::collections::BTreeMap<String, u64>,
    /// Streams waiting for a missing sequence.
    pub gaps: Vec<StreamGap>,
    /// Commands waiting, running or failed, with reasons.
    pub held: Vec<CommandRow>,
    /// Gaps given up whose sequences have not all arrived late.
    pub skipped: Vec<SkippedRange>,
}

/// A gap the agent gave up waiting for: sequences `first..=last` of a stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedRange {
    /// The stream's issuer.
    pub issuer: String,
    /// The stream's recipient.
    pub recipient: String,
    /// First missing sequence.
    pub first: u64,
    /// Last missing sequence.
    pub last: u64,
    /// When it was given up.
    pub at: i64,
}

pub(super) const COMMAND_COLUMNS: &str = "c.bundle_id, c.idx, c.cmd_id, c.type, c.args, c.files, c.state, c.reason, \
     c.attempts, c.next_attempt_at, b.issuer, b.recipient, b.sequence, b.late";

pub(super) fn command_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommandRow> {
    Ok(CommandRow {
        bundle_id: r.get(0)?,
        idx: r.get(1)?,
        cmd_id: r.get(2)?,
        kind: r.get(3)?,
        args: r.get(4)?,
        files: r.get(5)?,
        state: CommandState::parse(&r.get::<_, String>(6)?),
        reason: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: r.get(9)?,
        issuer: r.get(10)?,
        recipient: r.get(11)?,
        sequence: r.get::<_, i64>(12)?.unsigned_abs(),
        late: r.get(13)?,
    })
}

pub(super) fn seq(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::Store;

    /// A one-command (`ack`, id `ID:1`) bundle of issuer `k` for vessel `v`.
    pub(in crate::store) fn bundle(id: &str, seq: u64, expires_at: Option<i64>) -> NewBundle {
        NewBundle {
            id: id.into(),
            issuer: "k".into(),
            recipient: "v".into(),
            sequence: seq,
            manifest_sha256: id.into(),
            source_name: format!("{id}.vsb"),
            created_at: 0,
            expires_at,
            commands: vec![NewCommand {
                cmd_id: format!("{id}:1"),
                kind: "ack".into(),
                args: "{}".into(),
                files: "[]".into(),
            }],
        }
    }

    fn admit(store: &mut Store, b: &NewBundle, now: i64) -> BundleState {
        store
            .write(|tx| {
                let a = tx.classify(
                    &b.id,
                    &b.manifest_sha256,
                    &b.issuer,
                    &b.recipient,
                    b.sequence,
                )?;
                tx.admit(b, &a, 100, now)
            })
            .unwrap()
    }

    #[test]
    fn a_bundle_that_expired_while_waiting_finishes_when_the_gap_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
        assert_eq!(
            admit(&mut store, &bundle("b2", 2, Some(50)), 10),
            BundleState::Waiting
        );
        for (id, issuer, _) in store.expired_waiting(60, 0).unwrap() {
            store
                .write(|tx| tx.fail_bundle(&id, &issuer, "expired", 60))
                .unwrap();
        }
        // Sequence 1 arrives: b2 is released and, having nothing left to run, finishes.
        assert_eq!(
            admit(&mut store, &bundle("b1", 1, None), 70),
            BundleState::Ready
        );
        assert_eq!(
            store.bundle("b2").unwrap().unwrap().state,
            BundleState::Failed
        );
        assert!(
            store
                .next_command(70)
                .unwrap()
                .is_some_and(|c| c.bundle_id == "b1")
        );
    }

    /// How one stream classifies what arrives: in order, early, known, replayed, late.
    #[test]
    fn each_arrival_is_classified_against_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
        let class = |store: &mut Store, id: &str, sha: &str, seq: u64| {
            let a = store
                .write(|tx| tx.classify(id, sha, "k", "v", seq))
                .unwrap();
            match a {
                Admission::Known { same_content, .. } => format!("known same={same_content}"),
                Admission::Replay { .. } => "replay".into(),
                Admission::Late => "late".into(),
                Admission::InOrder => "in order".into(),
                Admission::Early { missing } => format!("early, missing {missing}"),
            }
        };
        assert_eq!(class(&mut store, "b1", "b1", 1), "in order");
        assert_eq!(class(&mut store, "b3", "b3", 3), "early, missing 1");
        admit(&mut store, &bundle("b1", 1, None), 10);
        assert_eq!(class(&mut store, "b1", "b1", 1), "known same=true");
        assert_eq!(class(&mut store, "b1", "other", 1), "known same=false");
        assert_eq!(
            class(&mut store, "x1", "x1", 1),
            "replay",
            "sequence 1 is taken"
        );
        admit(&mut store, &bundle("b3", 3, None), 20);
        // The gap at 2 is given up after its timeout (100 s); 2 arriving then is late.
        store.write(|tx| tx.release_gaps(200, 100)).unwrap();
        assert_eq!(class(&mut store, "b2", "b2", 2), "late");
        assert_eq!(class(&mut store, "b4", "b4", 4), "in order");
        assert_eq!(class(&mut store, "b0", "b0", 0), "replay");
    }

    #[test]
    fn the_journal_survives_reopening_and_refuses_another_vessel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        {
            let mut store = Store::open(&path, "v").unwrap();
            admit(&mut store, &bundle("b1", 1, None), 1);
        }
        let store = Store::open(&path, "v").unwrap();
        assert_eq!(
            store.bundle("b1").unwrap().unwrap().state,
            BundleState::Ready
        );
        drop(store);
        let err = Store::open(&path, "other").err().unwrap().to_string();
        assert!(err.contains("belongs to vessel \"v\""), "{err}");
    }

    mod order {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            /// Whatever order a carrier delivers sequences 1..=n in, with copies and with gap
            /// timeouts firing at any point: every bundle is journaled exactly once, none is ever
            /// refused as a replay, re-deliveries are recognised as known, and the stream ends
            /// at n + 1 with every skipped slot resolved by its late arrival.
            #[test]
            fn any_arrival_order_journals_each_bundle_once(
                order in Just((1..=6u64).collect::<Vec<_>>()).prop_shuffle(),
                copies in prop::collection::vec(any::<bool>(), 6),
                timeouts in prop::collection::vec(any::<bool>(), 6),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
                let mut now = 1_000;
                for (i, s) in order.iter().enumerate() {
                    let b = bundle(&format!("b{s}"), *s, None);
                    for _ in 0..(1 + usize::from(copies[i])) {
                        let a = store
                            .write(|tx| tx.classify(&b.id, &b.manifest_sha256, &b.issuer, &b.recipient, b.sequence))
                            .unwrap();
                        prop_assert!(!matches!(a, Admission::Replay { .. }), "b{} refused as a replay", s);
                        if !matches!(a, Admission::Known { .. }) {
                            store.write(|tx| tx.admit(&b, &a, 100, now)).unwrap();
                        }
                    }
                    if timeouts[i] {
                        now += 101;
                        store.write(|tx| tx.release_gaps(now, 100)).unwrap();
                    }
                }
                for s in 1..=6u64 {
                    let row = store.bundle(&format!("b{s}")).unwrap();
                    prop_assert!(row.is_some_and(|r| r.state == BundleState::Ready), "b{} journaled and ready", s);
                }
                prop_assert_eq!(store.commands().unwrap().len(), 6, "one command row per bundle");
                prop_assert!(store.overview().unwrap().skipped.is_empty(), "every skipped slot resolved");
                let next = store.write(|tx| tx.classify("new", "x", "k", "v", 7)).unwrap();
                prop_assert_eq!(next, Admission::InOrder, "the stream ends at sequence 7");
            }

            /// Bundles that reuse command ids (each of bundles 1..=5 carries command "c{s % 3}"),
            /// delivered in any order by a carrier: the id is held by the bundle with the lowest
            /// sequence, exactly as when they arrive in order, so every vessel given the same
            /// bundles ends in the same state.
            #[test]
            fn reused_command_ids_are_settled_by_sequence_not_arrival(
                order in Just((1..=5u64).collect::<Vec<_>>()).prop_shuffle(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(&dir.path().join("j.db"), "v").unwrap();
                for s in &order {
                    let mut b = bundle(&format!("b{s}"), *s, None);
                    b.commands[0].cmd_id = format!("c{}", s % 3);
                    admit(&mut store, &b, 1_000);
                }
                let mut holders: Vec<(String, String)> = store
                    .commands()
                    .unwrap()
                    .into_iter()
                    .filter(|c| c.state != CommandState::Duplicate)
                    .map(|c| (c.cmd_id, c.bundle_id))
                    .collect();
                holders.sort();
                prop_assert_eq!(
                    holders,
                    vec![
                        ("c0".to_string(), "b3".to_string()),
                        ("c1".to_string(), "b1".to_string()),
                        ("c2".to_string(), "b2".to_string()),
                    ]
                );
                prop_assert_eq!(store.commands().unwrap().len(), 5);
            }
        }
    }
}
