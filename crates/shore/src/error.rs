//! The shore's typed error: what an operator command or a pass of work failed on, with the
//! source kept, and whether trying again later may help ([`base::retry::Retriable`]). The
//! command line (`src/cli/shore.rs`) picks the exit code from the variant; nothing here prints.

use std::path::{Path, PathBuf};

use base::retry::Retriable;

use crate::store::ShoreDbError;

/// A failure of a shore operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `shore.toml` is missing something this operation needs, or holds a bad value: fix it.
    #[error("{0}")]
    Config(String),
    /// An argument cannot be used (an unknown vessel, a time that does not parse).
    #[error("{0}")]
    Usage(String),
    /// What the operator named does not exist (a vessel, a course).
    #[error("{0}")]
    NotFound(String),
    /// The input (a bundle, a batch file, a crew list) is refused: it will be refused again.
    #[error("{0}")]
    Refused(String),
    /// Shore's own database failed.
    #[error(transparent)]
    Store(#[from] ShoreDbError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The cloud Moodle failed or refused.
    #[error("the cloud Moodle: {0}")]
    Cloud(#[from] moodle::ws::WsError),
    /// A bundle could not be written or read (a key, a member).
    #[error("{0}")]
    Bundle(#[from] wire::envelope::VerifyError),
    /// Another failure, said in words.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// A file error at `path`, for `map_err(Error::io(&path))`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Retriable for Error {
    fn is_retriable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retriable(),
            Error::Cloud(e) => e.is_retriable(),
            Error::Bundle(wire::envelope::VerifyError::Local(_)) => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            Error::Config(_)
            | Error::Usage(_)
            | Error::NotFound(_)
            | Error::Refused(_)
            | Error::Bundle(_)
            | Error::Failed(_) => false,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;
