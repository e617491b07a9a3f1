//! Online backup through SQLite's backup API.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use super::StoreError;

/// How long a backup retries while the source database is busy.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(5);

/// Copies the whole database to `dest`, consistently, while the server runs.
///
/// The copy is made in one backup step (one read transaction, so it is a
/// snapshot even while others write) into a temporary file beside `dest`,
/// which is then renamed over `dest`: a crash never leaves a half-written
/// backup under the final name.
pub fn backup_to(conn: &Connection, dest: &Path) -> Result<(), StoreError> {
    let failed = |message: String| StoreError::Backup {
        path: dest.to_owned(),
        message,
    };
    let file_name = dest
        .file_name()
        .ok_or_else(|| failed("not a file name".to_owned()))?;
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
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dest.with_file_name(tmp_name);
    let result = copy_to(conn, &tmp)
        .map_err(|e| failed(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, dest).map_err(|e| failed(e.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn copy_to(conn: &Connection, path: &Path) -> Result<(), rusqlite::Error> {
    let mut target = Connection::open(path)?;
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
