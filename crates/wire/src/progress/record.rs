//! A progress record and its deterministic id.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// Activity completion: value is Moodle's `completionstate` (0 incomplete, 1 complete,
    /// 2 complete-pass, 3 complete-fail, 4 fail on a hidden grade item) or `removed`.
    ActivityCompletion,
    /// Course completion: value `complete` (time = `timecompleted`) or `removed`.
    CourseCompletion,
    /// A grade: value is the final grade as Moodle's exact decimal text (`6.50000`) or
    /// `removed`; the item is the activity key, or empty for the course total.
    Grade,
}

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 3] = [
        RecordKind::ActivityCompletion,
        RecordKind::CourseCompletion,
        RecordKind::Grade,
    ];

    /// Stable small code used in the database and on the wire.
    pub fn code(self) -> u8 {
        match self {
            RecordKind::ActivityCompletion => 1,
            RecordKind::CourseCompletion => 2,
            RecordKind::Grade => 3,
        }
    }

    /// The kind for a code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Name used in reports and CSV exports.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::ActivityCompletion => "activity_completion",
            RecordKind::CourseCompletion => "course_completion",
            RecordKind::Grade => "grade",
        }
    }
}

/// The value recorded when a row Moodle held before is gone (a course reset, a deleted user).
pub const REMOVED: &str = "removed";

/// One progress record, named by keys that mean the same on every Moodle.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Record {
    /// What it reports.
    pub kind: RecordKind,
    /// Learner key: user idnumber, else username.
    pub user: String,
    /// Course key: course idnumber, else shortname.
    pub course: String,
    /// Activity key (see `docs/progress.md`); empty for course-level records.
    pub item: String,
    /// Legacy id of the learner from the mapping table, or empty.
    pub user_legacy: String,
    /// Legacy id of the course, or empty.
    pub course_legacy: String,
    /// Legacy id of the activity, or empty.
    pub item_legacy: String,
    /// The state or grade (see [`RecordKind`]).
    pub value: String,
    /// When it happened, Unix seconds, as Moodle recorded it.
    pub time: i64,
}

impl Record {
    /// The record's id: the first 16 bytes of SHA-256 over the vessel, the kind, the natural
    /// key, the value and the time (legacy ids are annotations and not part of the identity).
    pub fn id(&self, vessel: &str) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"vessel-sync record v1\0");
        for part in [
            vessel.as_bytes(),
            &[self.kind.code()],
            self.user.as_bytes(),
            self.course.as_bytes(),
            self.item.as_bytes(),
            self.value.as_bytes(),
        ] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(self.time.to_be_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        // Shaped like a UUIDv5 (version and variant bits), so tools that expect UUIDs take it.
        id[6] = (id[6] & 0x0f) | 0x50;
        id[8] = (id[8] & 0x3f) | 0x80;
        id
    }
}

impl Record {
    /// A compact, self-describing byte form for the outbox: kind, then the seven strings with a
    /// 2-byte length each, then the time (8 bytes, big-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let strings = [
            &self.user,
            &self.course,
            &self.item,
            &self.user_legacy,
            &self.course_legacy,
            &self.item_legacy,
            &self.value,
        ];
        let mut out =
            Vec::with_capacity(1 + 8 + strings.iter().map(|s| 2 + s.len()).sum::<usize>());
        out.push(self.kind.code());
        for s in strings {
            let b = s.as_bytes();
            let n = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&b[..n]);
        }
        out.extend_from_slice(&self.time.to_be_bytes());
        out
    }

    /// The record written by [`Record::to_bytes`]; `None` if the bytes are not one.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let kind = RecordKind::from_code(*b.first()?)?;
        let mut pos = 1;
        let mut strings: Vec<String> = Vec::with_capacity(7);
        for _ in 0..7 {
            let n = usize::from(u16::from_be_bytes(b.get(pos..pos + 2)?.try_into().ok()?));
            pos += 2;
            strings.push(String::from_utf8(b.get(pos..pos + n)?.to_vec()).ok()?);
            pos += n;
        }
        let time = i64::from_be_bytes(b.get(pos..pos + 8)?.try_into().ok()?);
        if pos + 8 != b.len() {
            return None;
        }
        let mut it = strings.into_iter();
        Some(Record {
            kind,
            user: it.next()?,
            course: it.next()?,
            item: it.next()?,
            user_legacy: it.next()?,
            course_legacy: it.next()?,
            item_legacy: it.next()?,
            value: it.next()?,
            time,
        })
    }
}

/// Formats a record id as a UUID string.
pub fn format_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            kind: RecordKind::ActivityCompletion,
            user: "SEAF-100231".into(),
            course: "ERM-110".into(),
            item: "page:Watchkeeping".into(),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: "1".into(),
            time: 1_795_000_000,
        }
    }

    #[test]
    fn id_depends_on_identity_not_on_annotations() {
        let a = sample();
        let mut b = sample();
        b.course_legacy = "LEG-7".into();
        assert_eq!(a.id("mv-aurora"), b.id("mv-aurora"));
        assert_ne!(a.id("mv-aurora"), a.id("mv-borealis"));
        let mut c = sample();
        c.value = "0".into();
        assert_ne!(a.id("v"), c.id("v"));
        let mut d = sample();
        d.time += 1;
        assert_ne!(a.id("v"), d.id("v"));
        // Length prefixes keep field boundaries apart.
        let mut e = sample();
        e.user = "SEAF-100231E".into();
        e.course = "RM-110".into();
        assert_ne!(a.id("v"), e.id("v"));
        assert_eq!(format_id(&a.id("v")).len(), 36);
        assert_eq!(Record::from_bytes(&a.to_bytes()), Some(a.clone()));
        let b = a.to_bytes();
        assert_eq!(Record::from_bytes(&b[..b.len() - 1]), None);
    }
}
