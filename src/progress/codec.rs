//! The compact batch payload (`records.bin` inside a progress envelope).
//!
//! Records are sorted by (course, activity, kind, learner, time) and written column by column,
//! so that the envelope's zstd sees long runs of similar bytes. Strings appear once, in tables
//! (learners, courses, activities with their legacy ids, values); a record is then a handful of
//! small integers: table indexes (delta-coded where sorted) and the time as a signed delta from
//! the previous record. Ids are not sent: shore recomputes them from the vessel id it
//! authenticated and the decoded record. Layout (all integers LEB128, signed ones zigzag):
//!
//! ```text
//! "VSP1"
//! users:   n, then n × (key, legacy)          strings are length + UTF-8 bytes
//! courses: n, then n × (key, legacy)
//! items:   n, then n × (key, legacy)
//! values:  n, then n × value
//! records: n, then the columns, each n entries:
//!   kind code (byte) · course index delta (zigzag) · item index + 1, 0 for none (zigzag delta)
//!   · user index delta (zigzag) · value index · time delta (zigzag)
//! ```
//!
//! The decoder bounds every count and length by the bytes actually present, so a hostile
//! payload cannot make it allocate more than a small multiple of its own size.

use std::collections::BTreeMap;

use super::record::{Record, RecordKind};

const MAGIC: &[u8; 4] = b"VSP1";
const MAX_STRING: usize = 4096;

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

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvar(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A string table: index by first appearance in sorted order.
struct Table<'a> {
    index: BTreeMap<(&'a str, &'a str), u64>,
}

impl<'a> Table<'a> {
    fn build(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut index: BTreeMap<(&str, &str), u64> = pairs.map(|p| (p, 0)).collect();
        for (i, v) in index.values_mut().enumerate() {
            *v = i as u64;
        }
        Self { index }
    }
    fn get(&self, k: (&'a str, &'a str)) -> i64 {
        self.index.get(&k).copied().unwrap_or(0) as i64
    }
    fn write(&self, out: &mut Vec<u8>, pairs: bool) {
        put_uvar(out, self.index.len() as u64);
        for (a, b) in self.index.keys() {
            put_str(out, a);
            if pairs {
                put_str(out, b);
            }
        }
    }
}

/// Encodes records (any order; the encoding sorts a copy).
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.course, &a.item, a.kind, &a.user, a.time)
            .cmp(&(&b.course, &b.item, b.kind, &b.user, b.time))
    });
    let users = Table::build(
        sorted
            .iter()
            .map(|r| (r.user.as_str(), r.user_legacy.as_str())),
    );
    let courses = Table::build(
        sorted
            .iter()
            .map(|r| (r.course.as_str(), r.course_legacy.as_str())),
    );
    let items = Table::build(
        sorted
            .iter()
            .filter(|r| !r.item.is_empty() || !r.item_legacy.is_empty())
            .map(|r| (r.item.as_str(), r.item_legacy.as_str())),
    );
    let values = Table::build(sorted.iter().map(|r| (r.value.as_str(), "")));

    let mut out = Vec::with_capacity(64 + records.len() * 8);
    out.extend_from_slice(MAGIC);
    users.write(&mut out, true);
    courses.write(&mut out, true);
    items.write(&mut out, true);
    values.write(&mut out, false);
    put_uvar(&mut out, sorted.len() as u64);
    for r in &sorted {
        out.push(r.kind.code());
    }
    let mut prev = 0i64;
    for r in &sorted {
        let c = courses.get((&r.course, &r.course_legacy));
        put_ivar(&mut out, c - prev);
        prev = c;
    }
    prev = 0;
    for r in &sorted {
        let i = if r.item.is_empty() && r.item_legacy.is_empty() {
            0
        } else {
            items.get((&r.item, &r.item_legacy)) + 1
        };
        put_ivar(&mut out, i - prev);
        prev = i;
    }
    prev = 0;
    for r in &sorted {
        let u = users.get((&r.user, &r.user_legacy));
        put_ivar(&mut out, u - prev);
        prev = u;
    }
    for r in &sorted {
        put_uvar(&mut out, values.get((&r.value, "")) as u64);
    }
    prev = 0;
    for r in &sorted {
        put_ivar(&mut out, r.time.wrapping_sub(prev));
        prev = r.time;
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
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
    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.uvar()? as usize;
        if n > MAX_STRING || self.pos + n > self.buf.len() {
            return Err(self.err("string length out of range"));
        }
        let s = std::str::from_utf8(&self.buf[self.pos..self.pos + n])
            .map_err(|_| self.err("string is not UTF-8"))?;
        self.pos += n;
        Ok(s)
    }
    fn table(&mut self, pairs: bool) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
        let n = self.count(if pairs { 2 } else { 1 })?;
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let a = self.string()?;
            let b = if pairs { self.string()? } else { "" };
            t.push((a, b));
        }
        Ok(t)
    }
}

fn pick<'a>(
    table: &[(&'a str, &'a str)],
    idx: i64,
    what: &str,
) -> Result<(&'a str, &'a str), DecodeError> {
    usize::try_from(idx)
        .ok()
        .and_then(|i| table.get(i))
        .copied()
        .ok_or_else(|| DecodeError(format!("{what} index {idx} out of range")))
}

/// Decodes a payload written by [`encode`].
pub fn decode(buf: &[u8]) -> Result<Vec<Record>, DecodeError> {
    if buf.len() < 4 || &buf[..4] != MAGIC {
        return Err(DecodeError("missing the VSP1 header".into()));
    }
    let mut r = Reader { buf, pos: 4 };
    let users = r.table(true)?;
    let courses = r.table(true)?;
    let items = r.table(true)?;
    let values = r.table(false)?;
    // Every record takes at least 6 bytes (one per column).
    let n = r.count(6)?;
    let mut kinds = Vec::with_capacity(n);
    for _ in 0..n {
        let code = *buf.get(r.pos).ok_or_else(|| r.err("unexpected end"))?;
        r.pos += 1;
        kinds.push(RecordKind::from_code(code).ok_or_else(|| r.err("unknown record kind"))?);
    }
    let mut cols: [Vec<i64>; 3] = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    for col in cols.iter_mut() {
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(r.ivar()?);
            col.push(prev);
        }
    }
    let mut vals = Vec::with_capacity(n);
    for _ in 0..n {
        vals.push(r.uvar()?);
    }
    let mut out = Vec::with_capacity(n);
    let mut time = 0i64;
    for i in 0..n {
        time = time.wrapping_add(r.ivar()?);
        let (course, course_legacy) = pick(&courses, cols[0][i], "course")?;
        let (item, item_legacy) = match cols[1][i] {
            0 => ("", ""),
            j => pick(&items, j - 1, "activity")?,
        };
        let (user, user_legacy) = pick(&users, cols[2][i], "learner")?;
        let (value, _) = pick(&values, i64::try_from(vals[i]).unwrap_or(-1), "value")?;
        out.push(Record {
            kind: kinds[i],
            user: user.into(),
            course: course.into(),
            item: item.into(),
            user_legacy: user_legacy.into(),
            course_legacy: course_legacy.into(),
            item_legacy: item_legacy.into(),
            value: value.into(),
            time,
        });
    }
    if r.pos != buf.len() {
        return Err(r.err("trailing bytes"));
    }
    Ok(out)
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
