//! Helpers the benchmark commands share.

use std::sync::Arc;

use strata_io::{Backend, StorageRef, UringStorage};

use crate::error::{CliError, Result};

/// The storage backend named by `--io`; uring must really be available
/// (a benchmark of it must not quietly measure the fallback).
pub fn storage_for(name: &str) -> Result<StorageRef> {
    // For measuring: io_uring with synced O_DIRECT writes linked to an
    // fdatasync entry instead of carrying RWF_DSYNC.
    let variant = match name {
        "uring-fsync" => Some(strata_io::DirectSync::LinkedFsync),
        "uring-then-fsync" => Some(strata_io::DirectSync::ThenFdatasync),
        _ => None,
    };
    if let Some(how) = variant {
        return match UringStorage::try_new() {
            Ok(u) => Ok(Arc::new(u.with_direct_sync(how))),
            Err(e) => Err(CliError::Usage(format!(
                "--io {name}: io_uring is unavailable here ({e})"
            ))),
        };
    }
    let backend: Backend = name.parse()?;
    Ok(match backend {
        Backend::Std => strata_io::open_storage(Backend::Std),
        Backend::Uring => match UringStorage::try_new() {
            Ok(u) => Arc::new(u),
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "--io uring: io_uring is unavailable here ({e})"
                )))
            }
        },
    })
}

/// A temporary directory under the current one (so the data lands on the
/// same file system as the user's work, not on a tmpfs), removed on drop.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let here = std::env::current_dir().map_err(|e| CliError::Local {
        what: "current dir".into(),
        source: e,
    })?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(here)
        .map_err(|e| CliError::Local {
            what: "create temporary directory".into(),
            source: e,
        })
}
