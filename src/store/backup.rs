//! Online backup through SQLite's backup API.

use std::path::Path;

use rusqlite::backup::Backup;
use rusqlite::Connection;

use super::StoreError;

/// Copies the whole database to `dest`, consistently, while the server runs.
///
/// The copy is made in one backup step (one read transaction, so it is a
/// snapshot even while others write) into a temporary file beside `dest`,
/// which is then renamed over `dest`: a crash never leaves a half-written
/// backup under the final name.
pub fn backup_to(conn: &Connection, dest: &Path) -> Result<(), StoreError> {
    let file_name = dest.file_name().ok_or_else(|| StoreError::Open {
        path: dest.to_owned(),
        message: "not a file name".to_owned(),
    })?;
    let mut tmp_name = file_name.to_owned();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dest.with_file_name(tmp_name);
    let io_error = |e: std::io::Error| StoreError::Open {
        path: dest.to_owned(),
        message: e.to_string(),
    };
    let result = (|| {
        let mut target = Connection::open(&tmp).map_err(|e| StoreError::Open {
            path: dest.to_owned(),
            message: e.to_string(),
        })?;
        {
            let backup = Backup::new(conn, &mut target)?;
            // -1: all pages in one step, so the copy is one consistent snapshot.
            backup.run_to_completion(-1, std::time::Duration::ZERO, None)?;
        }
        // A standalone file: no -wal beside it to lose when copied elsewhere.
        target.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        drop(target);
        std::fs::rename(&tmp, dest).map_err(io_error)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
