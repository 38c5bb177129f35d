//! A strict, streaming reader for the ustar subset that bundles use.
//!
//! Bundles are written with plain POSIX ustar headers (names of at most 100 bytes, no
//! extensions). This reader accepts exactly that and nothing more: it parses one 512-byte header
//! at a time, checks its checksum, classifies the member type, and hands out the member's data as
//! a bounded reader. It never seeks and never buffers more than one block, so memory does not grow
//! with the archive. GNU and pax extension headers are refused rather than interpreted, because an
//! extension could rename a member after the checks on its name had run.

use std::io::{self, Read};

/// Size of one tar block.
pub const BLOCK: usize = 512;

/// What kind of member a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (typeflag `0` or NUL).
    Regular,
    /// A directory (`5`).
    Directory,
    /// A symbolic link (`2`).
    Symlink,
    /// A hard link (`1`).
    Hardlink,
    /// A character or block device (`3`, `4`).
    Device,
    /// A FIFO (`6`).
    Fifo,
    /// GNU long name/link or pax extended header (`L`, `K`, `x`, `g`).
    Extension,
    /// Anything else.
    Other(u8),
}

/// One parsed header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Raw member name bytes (prefix and name joined with `/` when a prefix is present).
    pub name: Vec<u8>,
    /// Declared data size in bytes.
    pub size: u64,
    /// The member type.
    pub kind: MemberKind,
    /// Link target for symbolic and hard links.
    pub link: Vec<u8>,
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum TarError {
    /// The block is not a valid tar header (bad checksum or garbage).
    NotTar(String),
    /// The stream ended inside a header or member.
    Truncated,
    /// The underlying reader failed.
    Io(io::Error),
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            TarError::Truncated
        } else {
            TarError::Io(e)
        }
    }
}

/// Streaming ustar reader over any byte source.
pub struct TarReader<R> {
    inner: R,
    /// Bytes of the current member's data still unread, plus its padding.
    pending_data: u64,
    pending_pad: u64,
    finished: bool,
}

impl<R: Read> TarReader<R> {
    /// Wraps a reader positioned at the start of a tar stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            pending_data: 0,
            pending_pad: 0,
            finished: false,
        }
    }

    /// Reads the next header, skipping whatever is left of the previous member.
    /// Returns `Ok(None)` at the end-of-archive marker (a zero block).
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut block = [0u8; BLOCK];
        read_exact_or_eof(&mut self.inner, &mut block)?;
        if block.iter().all(|b| *b == 0) {
            self.finished = true;
            return Ok(None);
        }
        let header = parse_header(&block)?;
        self.pending_data = header.size;
        self.pending_pad = padding(header.size);
        Ok(Some(header))
    }

    /// Reads up to `buf.len()` bytes of the current member's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.pending_data == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.pending_data).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated);
        }
        self.pending_data -= n as u64;
        Ok(n)
    }

    /// Consumes the rest of the stream after the end marker and reports whether anything but
    /// zero padding followed (trailing data is refused: it was not signed for).
    pub fn drain_trailer(&mut self) -> Result<bool, TarError> {
        let mut buf = [0u8; 8192];
        let mut junk = false;
        loop {
            let n = match self.inner.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Ok(junk);
            }
            if buf[..n].iter().any(|b| *b != 0) {
                junk = true;
            }
        }
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while self.pending_data > 0 {
            let n = self.read_data(&mut buf)?;
            if n == 0 {
                return Err(TarError::Truncated);
            }
        }
        let mut pad = [0u8; BLOCK];
        if self.pending_pad > 0 {
            let len = usize::try_from(self.pending_pad)
                .unwrap_or(BLOCK)
                .min(BLOCK);
            read_exact_or_eof(&mut self.inner, &mut pad[..len])?;
            self.pending_pad = 0;
        }
        Ok(())
    }
}

fn padding(size: u64) -> u64 {
    let rem = size % BLOCK as u64;
    if rem == 0 { 0 } else { BLOCK as u64 - rem }
}

fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), TarError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Err(TarError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn parse_header(block: &[u8; BLOCK]) -> Result<Header, TarError> {
    let stored = parse_octal(&block[148..156])
        .ok_or_else(|| TarError::NotTar("header checksum field is not a number".into()))?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32u64
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if stored != computed {
        return Err(TarError::NotTar(format!(
            "header checksum {stored} does not match the computed {computed}"
        )));
    }
    let size = parse_octal(&block[124..136])
        .ok_or_else(|| TarError::NotTar("member size field is not an octal number".into()))?;
    let kind = match block[156] {
        b'0' | 0 | b'7' => MemberKind::Regular,
        b'1' => MemberKind::Hardlink,
        b'2' => MemberKind::Symlink,
        b'3' | b'4' => MemberKind::Device,
        b'5' => MemberKind::Directory,
        b'6' => MemberKind::Fifo,
        b'L' | b'K' | b'x' | b'g' => MemberKind::Extension,
        other => MemberKind::Other(other),
    };
    let name = cstr(&block[0..100]);
    let mut full = Vec::new();
    if &block[257..262] == b"ustar" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            full.extend_from_slice(prefix);
            full.push(b'/');
        }
    }
    full.extend_from_slice(name);
    Ok(Header {
        name: full,
        size,
        kind,
        link: cstr(&block[157..257]).to_vec(),
    })
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Parses an octal numeric field (NUL/space padded). Base-256 sizes are refused.
fn parse_octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let mut value: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_members_written_by_the_tar_crate() {
        let bytes = archive(&[("a.txt", b"hello"), ("dir/b.bin", &[7u8; 1500])]);
        let mut r = TarReader::new(&bytes[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.name, b"a.txt");
        assert_eq!(h.size, 5);
        let mut buf = [0u8; 16];
        let n = r.read_data(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        // Second member read partially, then skipped by next_header.
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.name, b"dir/b.bin");
        assert_eq!(h.kind, MemberKind::Regular);
        assert!(r.next_header().unwrap().is_none());
        assert!(!r.drain_trailer().unwrap());
    }

    #[test]
    fn garbage_is_not_tar_and_a_cut_stream_is_truncated() {
        let mut r = TarReader::new(&[b'x'; 1024][..]);
        assert!(matches!(r.next_header(), Err(TarError::NotTar(_))));
        let bytes = archive(&[("a", &[1u8; 2000])]);
        let mut r = TarReader::new(&bytes[..700]);
        r.next_header().unwrap();
        assert!(matches!(r.next_header(), Err(TarError::Truncated)));
    }
}
