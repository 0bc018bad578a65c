//! Helpers the benchmark commands share.

use std::path::Path;
use std::sync::Arc;

use strata_io::{Backend, StorageRef, UringStorage};

use crate::error::{CliError, Result};

/// The storage backend named by `--io`; uring must really be available
/// (a benchmark of it must not quietly measure the fallback). `auto`
/// probes in `dir` (or its nearest existing parent: the file system the
/// data will be on) and says on stderr what it measured and chose.
pub fn storage_for(name: &str, dir: &Path) -> Result<StorageRef> {
    // For measuring: io_uring with synced O_DIRECT writes made durable
    // another way than RWF_DSYNC, or with a submission-polling thread.
    let variant = match name {
        "uring-fsync" => Some(strata_io::DirectSync::LinkedFsync),
        "uring-then-fsync" => Some(strata_io::DirectSync::ThenFdatasync),
        _ => None,
    };
    if name == "uring-sqpoll" {
        return match UringStorage::try_new_sqpoll(50) {
            Ok(u) => Ok(Arc::new(u)),
            Err(e) => Err(CliError::Usage(format!(
                "--io uring-sqpoll: io_uring with SQPOLL is unavailable here ({e})"
            ))),
        };
    }
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
        Backend::Auto => {
            let mut at = dir;
            while !at.is_dir() {
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => {
                        at = Path::new(".");
                        break;
                    }
                }
            }
            let (s, p) = strata_io::probe::probe(at).map_err(|e| {
                CliError::Usage(format!("--io auto: probing {} failed: {e}", at.display()))
            })?;
            eprintln!("strata: {p}");
            s
        }
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
