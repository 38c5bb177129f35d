//! Generated progress records for the benchmarks and tests: [`sample_records`] as a vessel
//! produces them (learners working through courses in sessions), [`random_records`] as the
//! worst case for compression. Deterministic: the same `n` gives the same records.

use wire::progress::{Record, RecordKind};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Records as a vessel produces them: learners working through STCW-style courses in
/// sessions (a few modules in order, minutes apart, a quiz grade and the course completion
/// after the last module; now and then an override back to incomplete), several learners'
/// sessions overlapping in the evening.
pub fn sample_records(n: u64) -> Vec<Record> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let users = (n / 25).clamp(10, 5000);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut start = 1_795_000_000i64;
    let rec = |kind, user: u64, c: u64, item: String, value: String, time| Record {
        kind,
        user: format!("SEAF-{:06}", 100_000 + user),
        course: format!("STCW-{c:02}"),
        item,
        user_legacy: String::new(),
        course_legacy: format!("LMS-{}", 4000 + c),
        item_legacy: String::new(),
        value,
        time,
    };
    while (out.len() as u64) < n {
        start += i64::try_from(rng.below(1800)).unwrap_or(0);
        let (user, c) = (rng.below(users), rng.below(12));
        let first = rng.below(8);
        let modules = 1 + rng.below(8 - first);
        let mut t = start;
        for m in first..first + modules {
            t += 120 + i64::try_from(rng.below(780)).unwrap_or(0);
            let value = if rng.below(20) == 0 { "0" } else { "1" };
            out.push(rec(
                RecordKind::ActivityCompletion,
                user,
                c,
                format!("STCW-{c:02}-M{m:02}"),
                value.into(),
                t,
            ));
            if m == 7 {
                t += 300 + i64::try_from(rng.below(600)).unwrap_or(0);
                let grade = format!("{}.{:05}", 50 + rng.below(51), rng.below(2) * 50_000);
                out.push(rec(
                    RecordKind::Grade,
                    user,
                    c,
                    format!("STCW-{c:02}-QUIZ"),
                    grade.clone(),
                    t,
                ));
                out.push(rec(RecordKind::Grade, user, c, String::new(), grade, t));
                out.push(rec(
                    RecordKind::CourseCompletion,
                    user,
                    c,
                    String::new(),
                    "complete".into(),
                    t,
                ));
            }
        }
    }
    out.truncate(usize::try_from(n).unwrap_or(0));
    out
}

/// The worst case for compression: every field drawn independently at random.
pub fn random_records(n: u64) -> Vec<Record> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let users = (n / 25).clamp(10, 5000);
    let mut t = 1_795_000_000i64;
    (0..n)
        .map(|_| {
            t += i64::try_from(rng.below(900)).unwrap_or(0);
            let c = rng.below(12);
            Record {
                kind: RecordKind::ActivityCompletion,
                user: format!("SEAF-{:06}", 100_000 + rng.below(users)),
                course: format!("STCW-{c:02}"),
                item: format!("STCW-{c:02}-M{:02}", rng.below(8)),
                user_legacy: String::new(),
                course_legacy: format!("LMS-{}", 4000 + c),
                item_legacy: String::new(),
                value: "1".into(),
                time: t,
            }
        })
        .collect()
}
