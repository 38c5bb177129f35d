//! The byte pipeline under the envelope reader: the file, the zstd decoder and the size cap,
//! each watched by a [`Probe`], so that an error the tar reader meets is blamed on the layer
//! that caused it (the disk, the compression, the cap) instead of on the archive.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use super::tarstream::TarError;
use super::{Rejection, VerifyError};

/// What the byte pipeline observed, so that a tar-level error can be attributed to the right
/// layer (file I/O, zstd, the size cap).
#[derive(Default)]
pub(super) struct Probe {
    pub(super) file_error: RefCell<Option<String>>,
    pub(super) zstd_error: RefCell<Option<(io::ErrorKind, String)>>,
    pub(super) total: Cell<u64>,
    pub(super) over_cap: Cell<bool>,
}

pub(super) struct FileSide<R> {
    pub(super) inner: R,
    pub(super) probe: Rc<Probe>,
}

impl<R: Read> Read for FileSide<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.probe.file_error.borrow_mut() = Some(e.to_string());
        })
    }
}

pub(super) struct Decoded<R> {
    pub(super) inner: R,
    pub(super) probe: Rc<Probe>,
    pub(super) cap: u64,
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.probe.over_cap.get() {
            return Err(io::Error::other("decompressed size cap reached"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                let total = self.probe.total.get().saturating_add(n as u64);
                self.probe.total.set(total);
                if total > self.cap {
                    self.probe.over_cap.set(true);
                    return Err(io::Error::other("decompressed size cap reached"));
                }
                Ok(n)
            }
            Err(e) => {
                if self.probe.file_error.borrow().is_none() {
                    *self.probe.zstd_error.borrow_mut() = Some((e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

pub(super) type Stream = Decoded<zstd::stream::read::Decoder<'static, BufReader<FileSide<File>>>>;

/// The layer to blame for a tar error.
pub(super) fn attribute(probe: &Probe, err: TarError, first: bool) -> VerifyError {
    if probe.over_cap.get() {
        return Rejection::TooLarge(format!(
            "it decompresses to more than the limit of {} bytes",
            probe.total.get().saturating_sub(1)
        ))
        .into();
    }
    if let Some(e) = probe.file_error.borrow().as_ref() {
        return VerifyError::Local(format!("reading the bundle file failed: {e}"));
    }
    if let Some((kind, msg)) = probe.zstd_error.borrow().as_ref() {
        let truncated = *kind == io::ErrorKind::UnexpectedEof || msg.contains("incomplete");
        return if truncated {
            Rejection::Truncated.into()
        } else {
            Rejection::CorruptCompression(msg.clone()).into()
        };
    }
    match err {
        TarError::Truncated if first => Rejection::NotTar(format!(
            "the decompressed data is only {} bytes, shorter than one tar header",
            probe.total.get()
        ))
        .into(),
        TarError::Truncated => Rejection::Truncated.into(),
        TarError::NotTar(m) if first => Rejection::NotTar(m).into(),
        TarError::NotTar(m) => {
            Rejection::NotTar(format!("a later member header is damaged: {m}")).into()
        }
        TarError::Io(e) => VerifyError::Local(format!("reading the bundle failed: {e}")),
    }
}
