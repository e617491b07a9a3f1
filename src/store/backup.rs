//! Online backup through SQLite's backup API, into a file only its owner
//! may read, that never goes through a file or link someone else planted.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{files, StoreError};

/// How long a backup retries while the source database is busy.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(5);

/// Copies the whole database to `dest`, consistently, while the server runs.
///
/// The copy is made in one backup step (one read transaction, so it is a
/// snapshot even while others write) into a new file, which is then renamed
/// over `dest`: a crash never leaves a half-written backup under the final
/// name, and a link planted at `dest` is replaced, not followed.
///
/// That new file is created exclusively, mode 0600, inside a new directory
/// beside `dest` named after `nonce` (which the caller draws from a CSPRNG,
/// so nobody can plant anything there first) and created mode 0700, so
/// that the `-journal` SQLite writes beside it by name is out of everyone
/// else's reach too. The directory is removed afterwards, also on failure.
pub fn backup_to(conn: &Connection, dest: &Path, nonce: &str) -> Result<(), StoreError> {
    let failed = |message: String| StoreError::Backup {
        path: dest.to_owned(),
        message,
    };
    if dest.file_name().is_none() {
        return Err(failed("not a file name".to_owned()));
    }
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(failed(format!(
            "directory {} does not exist",
            dir.display()
        )));
    }
    let staging = dir.join(format!(".latchkey-backup-{nonce}"));
    // mkdir(2) fails on anything already there, a link included.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| failed(format!("cannot create {}: {e}", staging.display())))?;
    let result = copy_into(conn, &staging).and_then(|tmp| {
        std::fs::rename(&tmp, dest).map_err(|e| format!("cannot rename the copy into place: {e}"))
    });
    // Nothing of value is left inside on success; after a failure, a
    // partial copy and its journal. remove_dir_all does not follow links.
    let _ = std::fs::remove_dir_all(&staging);
    result.map_err(failed)
}

/// Writes the copy to a new 0600 file in `staging`; returns its path.
fn copy_into(conn: &Connection, staging: &Path) -> Result<PathBuf, String> {
    let tmp = staging.join("backup.db");
    let file = files::create_new_private(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    drop(file);
    copy_to(conn, &tmp).map_err(|e| e.to_string())?;
    Ok(tmp)
}

fn copy_to(conn: &Connection, path: &Path) -> Result<(), rusqlite::Error> {
    // No CREATE: the file must be the one just made. NOFOLLOW: SQLite
    // would otherwise resolve a link in the name before opening.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut target = Connection::open_with_flags(path, flags)?;
    {
        let backup = Backup::new(conn, &mut target)?;
        // -1: all pages in one step, so the copy is one consistent snapshot.
        // (`run_to_completion` panics on -1: it wants a positive page count.)
        let deadline = Instant::now() + BUSY_RETRY_FOR;
        while backup.step(-1)? != StepResult::Done {
            // Busy or locked: a writer holds the source; retry shortly.
            if Instant::now() >= deadline {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the database stayed busy for 5 s".to_owned()),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // A standalone file: no -wal beside it to lose when copied elsewhere.
    target.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_planted_staging_name_is_refused_and_left_alone() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let out = tempfile::tempdir().unwrap();
        let planted = out.path().join(".latchkey-backup-n1");
        std::os::unix::fs::symlink(out.path().join("elsewhere"), &planted).unwrap();
        let err = backup_to(&conn, &out.path().join("copy.db"), "n1").unwrap_err();
        assert!(err.to_string().contains("cannot create"), "{err}");
        assert_eq!(entries(out.path()), [".latchkey-backup-n1"]);
        assert!(!out.path().join("elsewhere").exists());
    }

    #[test]
    fn a_failed_backup_leaves_nothing_behind() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        test_user(&conn, "alice");
        let out = tempfile::tempdir().unwrap();
        // A directory cannot be replaced by the copy: the rename fails.
        std::fs::create_dir(out.path().join("copy.db")).unwrap();
        std::fs::write(out.path().join("copy.db/kept"), b"x").unwrap();
        let err = backup_to(&conn, &out.path().join("copy.db"), "n2").unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
        assert_eq!(entries(out.path()), ["copy.db"]);
        assert_eq!(entries(&out.path().join("copy.db")), ["kept"]);
    }
}
