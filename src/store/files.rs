//! The database's files on disk are their owner's alone (mode 0600).
//!
//! They hold password hashes, email addresses and the client addresses of
//! logins, so neither the database, nor its `-wal` and `-shm`, nor a backup
//! may be readable by other local users, whatever the umask. SQLite creates
//! a new database 0644 (less the umask), but gives `-wal`, `-shm` and
//! `-journal` the mode of the database file itself, so creating that file
//! 0600 before SQLite opens it is enough for the rest.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Read and write for the owner, nothing for anyone else.
pub const PRIVATE_MODE: u32 = 0o600;

/// Creates `path` as a new, empty file with mode 0600; fails if anything
/// (a file, a directory, a symbolic link) is already there.
///
/// `O_CREAT | O_EXCL`: never opens a file someone else planted, never
/// follows a link. The mode is set again through the open file, because
/// the umask may have taken more than group and other bits.
pub fn create_new_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(PRIVATE_MODE))?;
    Ok(file)
}

/// Creates the database file `path` empty with mode 0600 unless it exists
/// (an empty file is an empty SQLite database).
pub fn create_database(path: &Path) -> io::Result<()> {
    match create_new_private(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A database file whose group and other permissions were removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    /// The mode it had, e.g. 0o644.
    pub was: u32,
}

/// Removes group and other permissions from the database file `path` and
/// from the `-wal` and `-shm` beside it, where present: a file made by a
/// latchkey that did not yet create them 0600 (0644, readable by everyone).
///
/// Follows symbolic links in `path` as SQLite does (its `-wal` and `-shm`
/// lie beside the file the links lead to), but never a link at one of the
/// three file names themselves.
pub fn make_private(path: &Path) -> io::Result<Vec<Tightened>> {
    let database = std::fs::canonicalize(path)?;
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = database.clone().into_os_string();
        name.push(suffix);
        let file = PathBuf::from(name);
        let meta = match std::fs::symlink_metadata(&file) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.file_type().is_file() || mode & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&file, Permissions::from_mode(mode & 0o700))?;
        tightened.push(Tightened {
            path: file,
            was: mode,
        });
    }
    Ok(tightened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_new_private_file_is_0600_and_nothing_already_there_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        create_new_private(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let err = create_new_private(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);

        // A link, even a dangling one, is not followed.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("target"), &link).unwrap();
        let err = create_new_private(&link).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("target").exists());
    }

    #[test]
    fn an_existing_database_keeps_its_content_and_loses_group_and_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(&db, b"content").unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        let wal = dir.path().join("x.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, Permissions::from_mode(0o666)).unwrap();
        create_database(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"content");

        let tightened = make_private(&db).unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            tightened,
            [
                Tightened {
                    path: canonical.join("x.db"),
                    was: 0o644
                },
                Tightened {
                    path: canonical.join("x.db-wal"),
                    was: 0o666
                }
            ]
        );
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
        // Already private: nothing to do, nothing to say.
        assert_eq!(make_private(&db).unwrap(), []);
    }

    #[test]
    fn a_link_at_a_wal_name_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        create_database(&db).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"").unwrap();
        std::fs::set_permissions(&elsewhere, Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("x.db-shm")).unwrap();
        assert_eq!(make_private(&db).unwrap(), []);
        assert_eq!(mode(&elsewhere), 0o644);
    }
}
