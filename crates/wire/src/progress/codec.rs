//! The compact batch payload (`records.bin` inside a progress envelope).
//!
//! Records are grouped by learner and course, and sorted by time within a group (the order a
//! learner works through a course),
//! and written column by column, so that the envelope's zstd sees long runs of similar bytes.
//! Strings appear once, in tables: learners and courses (key and legacy id), "slots" (kind,
//! course and activity: what a record is about) and values. A record is then four small
//! integers: the slot and the learner as deltas from the previous record's (the next activity of
//! the same course is usually the next slot, the learner usually the same), the value's index,
//! and the time: a delta from the previous record of the group, or, for a group's first record,
//! an offset from the batch's earliest time. Ids are not sent: shore recomputes
//! them from the vessel id it authenticated and the decoded record. Layout (integers LEB128,
//! signed ones zigzag):
//!
//! ```text
//! "VSP3"
//! settled:  the vessel's acknowledged batch sequence when it built this batch (every batch up
//!           to it is settled, so shore may start its contiguous acknowledgement there)
//! learners: n, then n × (key, legacy)          strings are length + UTF-8 bytes
//! courses:  n, then n × (key, legacy)
//! slots:    n, then n × (kind byte, course index, activity, activity legacy)
//! values:   n, then n × value
//! base time (zigzag)
//! records:  n, then the columns, each n entries (deltas start from 0):
//!   slot index delta (zigzag) · learner index delta (zigzag) · value index · time (unsigned:
//!   at the first record of a learner-and-course group, the offset from the base time; inside
//!   a group, the delta from the previous record)
//! ```
//!
//! The decoder bounds every count and length by the bytes actually present, and counts every
//! byte it will hold (each table string, each record with the strings it copies) against a
//! [`DecodeLimits`] budget *before* allocating it: by default 256 × the payload's size (at
//! least 1 MiB), so a hostile payload cannot make it allocate more than that, however its
//! records reuse long table strings. A string is at most 4 KiB, front coding included.

use std::collections::BTreeMap;

use super::record::{Record, RecordKind};

const MAGIC: &[u8; 4] = b"VSP3";
const MAX_STRING: usize = 4096;

pub use super::limits::{DECODED_PER_INPUT_BYTE, DecodeLimits, MIN_DECODED_BYTES, decoded_size};

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("progress payload is malformed: {0}")]
pub struct DecodeError(pub String);

fn put_uvar(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_ivar(out: &mut Vec<u8>, v: i64) {
    put_uvar(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Front coding: a table string is written as the length of the prefix it shares with the
/// previous string of the same column, then the rest (tables are sorted, so neighbours share a
/// lot: `SEAF-100231`, `SEAF-100232`).
#[derive(Default)]
struct Front {
    prev: Vec<u8>,
}

impl Front {
    fn put(&mut self, out: &mut Vec<u8>, s: &str) {
        let b = s.as_bytes();
        let common = self.prev.iter().zip(b).take_while(|(x, y)| x == y).count();
        put_uvar(out, common as u64);
        put_uvar(out, (b.len() - common) as u64);
        out.extend_from_slice(&b[common..]);
        self.prev.clear();
        self.prev.extend_from_slice(b);
    }

    fn get(&mut self, r: &mut Reader<'_>) -> Result<String, DecodeError> {
        let common = usize::try_from(r.uvar()?).unwrap_or(usize::MAX);
        let n = usize::try_from(r.uvar()?).unwrap_or(usize::MAX);
        if common > self.prev.len()
            || n > MAX_STRING
            || common + n > MAX_STRING
            || r.pos + n > r.buf.len()
        {
            return Err(r.err("string length out of range"));
        }
        r.spend(common + n + std::mem::size_of::<String>())?;
        self.prev.truncate(common);
        self.prev.extend_from_slice(&r.buf[r.pos..r.pos + n]);
        r.pos += n;
        String::from_utf8(self.prev.clone()).map_err(|_| r.err("string is not UTF-8"))
    }
}

/// Index of each distinct key, in sorted key order.
fn table<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, u64> {
    let mut t: BTreeMap<K, u64> = keys.map(|k| (k, 0)).collect();
    for (i, v) in t.values_mut().enumerate() {
        *v = i as u64;
    }
    t
}

type Slot<'a> = (u8, &'a str, &'a str, &'a str, &'a str);

fn group(r: &Record) -> (&str, &str, &str, &str) {
    (&r.user, &r.user_legacy, &r.course, &r.course_legacy)
}

fn slot(r: &Record) -> Slot<'_> {
    (
        r.kind.code(),
        &r.course,
        &r.course_legacy,
        &r.item,
        &r.item_legacy,
    )
}

/// Encodes records (any order; the encoding sorts a copy) with no settled sequence.
pub fn encode(records: &[Record]) -> Vec<u8> {
    encode_batch(records, 0)
}

/// Encodes a batch: records and the sequence up to which the vessel holds acknowledgements.
pub fn encode_batch(records: &[Record], settled: u64) -> Vec<u8> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| (group(a), a.time, slot(a)).cmp(&(group(b), b.time, slot(b))));
    let users = table(
        sorted
            .iter()
            .map(|r| (r.user.as_str(), r.user_legacy.as_str())),
    );
    let courses = table(
        sorted
            .iter()
            .map(|r| (r.course.as_str(), r.course_legacy.as_str())),
    );
    let slots = table(sorted.iter().map(|r| slot(r)));
    let values = table(sorted.iter().map(|r| r.value.as_str()));
    let base = sorted.iter().map(|r| r.time).min().unwrap_or(0);

    let mut out = Vec::with_capacity(64 + records.len() * 6);
    out.extend_from_slice(MAGIC);
    put_uvar(&mut out, settled);
    for t in [&users, &courses] {
        put_uvar(&mut out, t.len() as u64);
        let (mut fk, mut fl) = (Front::default(), Front::default());
        for (k, l) in t.keys() {
            fk.put(&mut out, k);
            fl.put(&mut out, l);
        }
    }
    put_uvar(&mut out, slots.len() as u64);
    let (mut fi, mut fl) = (Front::default(), Front::default());
    for (kind, c, cl, i, il) in slots.keys() {
        out.push(*kind);
        put_uvar(&mut out, courses.get(&(*c, *cl)).copied().unwrap_or(0));
        fi.put(&mut out, i);
        fl.put(&mut out, il);
    }
    put_uvar(&mut out, values.len() as u64);
    let mut fv = Front::default();
    for v in values.keys() {
        fv.put(&mut out, v);
    }
    put_ivar(&mut out, base);
    put_uvar(&mut out, sorted.len() as u64);
    let mut prev = 0i64;
    for r in &sorted {
        let i = slots.get(&slot(r)).copied().unwrap_or(0) as i64;
        put_ivar(&mut out, i - prev);
        prev = i;
    }
    let mut prev = 0i64;
    for r in &sorted {
        let i = users
            .get(&(r.user.as_str(), r.user_legacy.as_str()))
            .copied()
            .unwrap_or(0) as i64;
        put_ivar(&mut out, i - prev);
        prev = i;
    }
    for r in &sorted {
        put_uvar(&mut out, values.get(r.value.as_str()).copied().unwrap_or(0));
    }
    let mut prev: Option<&Record> = None;
    for r in &sorted {
        let t = match prev {
            Some(p) if group(p) == group(r) => r.time.wrapping_sub(p.time),
            _ => r.time.wrapping_sub(base),
        };
        put_uvar(&mut out, t as u64);
        prev = Some(r);
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Decoded bytes still allowed.
    budget: usize,
}

impl<'a> Reader<'a> {
    fn spend(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.budget = self.budget.checked_sub(bytes).ok_or_else(|| {
            DecodeError(format!(
                "it would decode to more than its budget (at byte {}); a batch that large must be split",
                self.pos
            ))
        })?;
        Ok(())
    }
    fn err(&self, what: &str) -> DecodeError {
        DecodeError(format!("{what} at byte {}", self.pos))
    }
    fn uvar(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("unexpected end"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.err("integer too long"))
    }
    fn ivar(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }
    /// A count of items that each take at least `min_bytes`: bounded by what is left.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.uvar()?;
        let left = (self.buf.len() - self.pos) / min_bytes.max(1);
        if n > left as u64 {
            return Err(self.err("count larger than the payload"));
        }
        Ok(n as usize)
    }
    fn pairs(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        // Each entry takes at least 4 bytes (two front-coded strings).
        let n = self.count(4)?;
        let mut t = Vec::with_capacity(n);
        let (mut fk, mut fl) = (Front::default(), Front::default());
        for _ in 0..n {
            t.push((fk.get(self)?, fl.get(self)?));
        }
        Ok(t)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.err("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }
}

fn pick<'t, T>(table: &'t [T], idx: u64, what: &str) -> Result<&'t T, DecodeError> {
    usize::try_from(idx)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| DecodeError(format!("{what} index {idx} out of range")))
}

/// Decodes a payload written by [`encode`].
pub fn decode(buf: &[u8]) -> Result<Vec<Record>, DecodeError> {
    decode_batch(buf).map(|(_, r)| r)
}

/// Decodes a payload within the default budget ([`DecodeLimits::for_input`]): (settled
/// sequence, records).
pub fn decode_batch(buf: &[u8]) -> Result<(u64, Vec<Record>), DecodeError> {
    decode_batch_limited(buf, &DecodeLimits::for_input(buf.len()))
}

/// Decodes a payload within `limits`: (settled sequence, records).
pub fn decode_batch_limited(
    buf: &[u8],
    limits: &DecodeLimits,
) -> Result<(u64, Vec<Record>), DecodeError> {
    if buf.len() < 4 || &buf[..4] != MAGIC {
        return Err(DecodeError("missing the VSP3 header".into()));
    }
    let mut r = Reader {
        buf,
        pos: 4,
        budget: limits.max_decoded_bytes,
    };
    let settled = r.uvar()?;
    let users = r.pairs()?;
    let courses = r.pairs()?;
    let n = r.count(6)?;
    let mut slots = Vec::with_capacity(n);
    let (mut fi, mut fl) = (Front::default(), Front::default());
    for _ in 0..n {
        let code = r.byte()?;
        let kind = RecordKind::from_code(code).ok_or_else(|| r.err("unknown record kind"))?;
        let course = r.uvar()?;
        let c = usize::try_from(course)
            .ok()
            .filter(|c| *c < courses.len())
            .ok_or_else(|| r.err("course index out of range"))?;
        slots.push((kind, c, fi.get(&mut r)?, fl.get(&mut r)?));
    }
    let n = r.count(2)?;
    let mut values = Vec::with_capacity(n);
    let mut fv = Front::default();
    for _ in 0..n {
        values.push(fv.get(&mut r)?);
    }
    let base = r.ivar()?;
    // Every record takes at least 4 bytes (one per column).
    let n = r.count(4)?;
    if n > limits.max_records {
        return Err(DecodeError(format!(
            "{n} records, over the limit of {} a batch",
            limits.max_records
        )));
    }
    // The three index columns and the records themselves, before they are allocated.
    r.spend(n.saturating_mul(3 * 8 + std::mem::size_of::<Record>()))?;
    let mut cols: [Vec<u64>; 3] = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    for (c, col) in cols.iter_mut().enumerate() {
        let mut prev = 0i64;
        for _ in 0..n {
            if c < 2 {
                prev = prev.wrapping_add(r.ivar()?);
                col.push(u64::try_from(prev).unwrap_or(u64::MAX));
            } else {
                col.push(r.uvar()?);
            }
        }
    }
    let mut out: Vec<Record> = Vec::with_capacity(n);
    let [slot_col, user_col, value_col] = &cols;
    for ((s, u), v) in slot_col.iter().zip(user_col).zip(value_col) {
        let (kind, c, item, item_legacy) = pick(&slots, *s, "slot")?;
        let (course, course_legacy) = &courses[*c];
        let (user, user_legacy) = pick(&users, *u, "learner")?;
        let value = pick(&values, *v, "value")?;
        r.spend(
            course.len()
                + course_legacy.len()
                + item.len()
                + item_legacy.len()
                + user.len()
                + user_legacy.len()
                + value.len(),
        )?;
        let t = r.uvar()? as i64;
        let time = match out.last() {
            Some(p)
                if p.user == *user
                    && p.user_legacy == *user_legacy
                    && p.course == *course
                    && p.course_legacy == *course_legacy =>
            {
                p.time.wrapping_add(t)
            }
            _ => base.wrapping_add(t),
        };
        out.push(Record {
            kind: *kind,
            user: user.clone(),
            course: course.clone(),
            item: item.clone(),
            user_legacy: user_legacy.clone(),
            course_legacy: course_legacy.clone(),
            item_legacy: item_legacy.clone(),
            value: value.clone(),
            time,
        });
    }
    if r.pos != buf.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok((settled, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            0u8..3,
            "[A-Z]{0,3}[0-9]{0,4}",
            "[A-Z]{1,3}-[0-9]{1,3}",
            "([a-z]{1,5}:[A-Za-z ]{0,8})?",
            "[0-9]{0,3}",
            "(complete|removed|[0-4]|[0-9]{1,2}\\.[0-9]{5})",
            any::<i64>(),
        )
            .prop_map(|(k, user, course, item, legacy, value, time)| Record {
                kind: RecordKind::ALL[k as usize],
                user,
                course,
                item,
                user_legacy: legacy.clone(),
                course_legacy: String::new(),
                item_legacy: legacy,
                value,
                time,
            })
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(mut records in proptest::collection::vec(arb_record(), 0..200)) {
            let bytes = encode(&records);
            let mut back = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            records.sort();
            back.sort();
            prop_assert_eq!(records, back);
        }

        #[test]
        fn garbage_is_refused_or_decoded_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = MAGIC.to_vec();
            b.extend(bytes);
            let _ = decode(&b);
        }
    }

    /// A payload whose tables hold strings of `len` bytes and whose `records` records all
    /// point at them: 4 bytes of input each, up to seven long strings of output each.
    fn bomb(len: usize, records: usize) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        put_uvar(&mut b, 0);
        let long = vec![b'x'; len];
        let string = |b: &mut Vec<u8>, s: &[u8]| {
            put_uvar(b, 0);
            put_uvar(b, s.len() as u64);
            b.extend_from_slice(s);
        };
        for _ in 0..2 {
            put_uvar(&mut b, 1);
            string(&mut b, &long);
            string(&mut b, &long);
        }
        put_uvar(&mut b, 1);
        b.push(RecordKind::ALL[0].code());
        put_uvar(&mut b, 0);
        string(&mut b, &long);
        string(&mut b, &long);
        put_uvar(&mut b, 1);
        string(&mut b, &long);
        put_ivar(&mut b, 0);
        put_uvar(&mut b, records as u64);
        b.extend(std::iter::repeat_n(0u8, records * 4));
        b
    }

    fn decoded_bytes(records: &[Record]) -> usize {
        records.iter().map(decoded_size).sum()
    }

    #[test]
    fn a_532_byte_batch_cannot_blow_up_the_decoder() {
        // The review's payload shape: 4 KiB strings and 4-byte records pointing at them.
        let b = bomb(4096, 5_000);
        let out = decode_batch(&b);
        let err = out.expect_err("over budget");
        assert!(err.to_string().contains("budget"), "{err}");
        // Front coding cannot grow a string past 4 KiB either.
        let mut b = MAGIC.to_vec();
        put_uvar(&mut b, 0);
        put_uvar(&mut b, 20_000);
        for i in 0..20_000u64 {
            put_uvar(&mut b, i);
            put_uvar(&mut b, 1);
            b.push(b'y');
            put_uvar(&mut b, 0);
            put_uvar(&mut b, 0);
        }
        let err = decode_batch(&b).expect_err("refused");
        assert!(
            err.to_string().contains("string length out of range"),
            "{err}"
        );
        // A cap on records holds whatever the budget.
        let honest = encode(&vec![
            Record {
                kind: RecordKind::Grade,
                user: "u".into(),
                course: "c".into(),
                item: "i".into(),
                user_legacy: String::new(),
                course_legacy: String::new(),
                item_legacy: String::new(),
                value: "1".into(),
                time: 5,
            };
            3
        ]);
        let limits = DecodeLimits::capped(honest.len(), 2, usize::MAX);
        assert!(decode_batch_limited(&honest, &limits).is_err());
    }

    proptest! {
        /// Whatever the payload (random bytes after the header, or tables of long strings
        /// pointed at by many small records), what decodes fits the budget: at most 256 times
        /// the input, or 1 MiB for a small one.
        #[test]
        fn decoded_bytes_stay_within_a_multiple_of_the_input(
            garbage in proptest::collection::vec(any::<u8>(), 0..2000),
            len in 0usize..4097,
            records in 0usize..20_000,
        ) {
            for b in [
                [MAGIC.as_slice(), garbage.as_slice()].concat(),
                bomb(len, records),
            ] {
                if let Ok((_, out)) = decode_batch(&b) {
                    let budget = (b.len() * DECODED_PER_INPUT_BYTE).max(MIN_DECODED_BYTES);
                    prop_assert!(decoded_bytes(&out) <= budget, "{} > {budget}", decoded_bytes(&out));
                }
            }
        }
    }

    #[test]
    fn truncation_is_an_error() {
        let r = Record {
            kind: RecordKind::Grade,
            user: "u".into(),
            course: "c".into(),
            item: String::new(),
            user_legacy: String::new(),
            course_legacy: String::new(),
            item_legacy: String::new(),
            value: "6.50000".into(),
            time: 5,
        };
        let bytes = encode(&[r]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
