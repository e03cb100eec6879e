//! A file the task could not create, read or write: the same words wherever a kind
//! touches the disk (the warehouse, the ingest's landing zone).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create {} ({source})", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {} ({source})", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {} ({source})", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
