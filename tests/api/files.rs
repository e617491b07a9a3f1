//! Tests: files. The database, its `-wal` and `-shm`, and every backup are
//! the owner's alone (0600) whatever the umask, and a backup never goes
//! through a file or link someone planted. The binary runs under a shell
//! that sets the umask (or plants files) and then `exec`s it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use reqwest::StatusCode;

use crate::helpers::{column, execute, open_db, scalar, through_shell, Sandbox, Server};

/// The permission bits of `path` itself (a link is not followed).
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.to_owned().into_os_string();
    name.push(suffix);
    name.into()
}

fn usernames_in(path: &Path) -> Vec<String> {
    column(&open_db(path), "SELECT username FROM users ORDER BY id")
}

#[tokio::test]
async fn the_database_and_its_wal_and_shm_are_owner_only_under_umask_000() {
    let sandbox = Sandbox::on_sqlite_file();
    let mut server = Server::spawn(through_shell(
        &sandbox.serve_command(&["serve"]),
        "umask 000",
    ));
    let password = server.admin_password();
    let response = server.api().login("admin", &password).await;
    assert_eq!(response.status(), StatusCode::OK);
    let db = sandbox.db_path();
    for path in [
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
    ] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    server.stop();

    // An admin command that creates the file does the same.
    let other = sandbox.path("other.db");
    let mut cmd = sandbox.command(&["user", "add", "alice", "--password-stdin"]);
    cmd.env("LATCHKEY_DATABASE__PATH", &other);
    execute(through_shell(&cmd, "umask 000"), Some(b"pw\n")).assert_ok();
    assert_eq!(mode(&other), 0o600);
}

#[test]
fn a_database_open_to_others_is_made_owner_only_and_the_log_says_so() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    let db = sandbox.db_path();
    // A file as an earlier latchkey left it: 0644, and a -wal and -shm
    // beside it (kept in place by a reader that stays open).
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reader = open_db(&db);
    let users: i64 = scalar(&reader, "SELECT count(*) FROM users", &[]);
    assert_eq!(users, 1);
    let (wal, shm) = (with_suffix(&db, "-wal"), with_suffix(&db, "-shm"));
    for path in [&wal, &shm] {
        // SQLite gave them the file's mode, unless left from before.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let run = sandbox.latchkey(&["user", "list"], None);
    run.assert_ok();
    assert_eq!((mode(&db), mode(&wal), mode(&shm)), (0o600, 0o600, 0o600));
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:#?}");
    for needed in [
        "0600",
        "latchkey.db (was 0644)",
        "latchkey.db-wal (was 0644)",
    ] {
        assert!(lines[0].contains(needed), "{needed:?} in {:?}", lines[0]);
    }
    // Done once: the next command has nothing to say.
    let run = sandbox.latchkey(&["user", "list"], None);
    run.assert_ok();
    assert_eq!(run.stderr, "");
    drop(reader);
}

#[test]
fn a_backup_is_owner_only_under_umask_000_also_when_it_replaces_one_open_to_others() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    let cmd = sandbox.command(&["backup", "copy.db"]);
    execute(through_shell(&cmd, "umask 000"), None).assert_ok();
    let copy = sandbox.path("copy.db");
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(usernames_in(&copy), ["alice"]);

    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o666)).unwrap();
    sandbox.add_user("bob", "pw");
    execute(through_shell(&cmd, "umask 000"), None).assert_ok();
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(usernames_in(&copy), ["alice", "bob"]);
}

#[test]
fn a_link_planted_at_the_old_temporary_name_does_not_redirect_the_backup() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    // Backups used to be written to FILE.tmp-<pid>, a name anyone could
    // guess; $$ is the PID latchkey runs with after `exec`.
    let cmd = sandbox.command(&["backup", "copy.db"]);
    let run = execute(
        through_shell(&cmd, "ln -s stolen.db \"copy.db.tmp-$$\""),
        None,
    );
    run.assert_ok();
    assert!(
        !sandbox.path("stolen.db").exists(),
        "the backup went through the link"
    );
    let copy = sandbox.path("copy.db");
    assert!(std::fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(usernames_in(&copy), ["alice"]);
}

#[test]
fn a_file_planted_at_the_old_temporary_name_is_not_written_through() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    // Someone else's file, writable by all, linked at the guessable name:
    // writing through it would hand them the backup.
    let trap = sandbox.path("trap");
    std::fs::write(&trap, b"").unwrap();
    std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cmd = sandbox.command(&["backup", "copy.db"]);
    execute(through_shell(&cmd, "ln trap \"copy.db.tmp-$$\""), None).assert_ok();
    assert_eq!(
        std::fs::read(&trap).unwrap(),
        b"",
        "written through the file"
    );
    let copy = sandbox.path("copy.db");
    let (copy_meta, trap_meta) = (
        std::fs::metadata(&copy).unwrap(),
        std::fs::metadata(&trap).unwrap(),
    );
    assert_ne!(copy_meta.ino(), trap_meta.ino());
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(usernames_in(&copy), ["alice"]);
}

#[test]
fn a_backup_over_a_planted_link_replaces_the_link_not_its_target() {
    let sandbox = Sandbox::on_sqlite_file();
    sandbox.add_user("alice", "pw");
    let victim = sandbox.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink("victim", sandbox.path("copy.db")).unwrap();

    sandbox.latchkey(&["backup", "copy.db"], None).assert_ok();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let copy = sandbox.path("copy.db");
    assert!(std::fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(mode(&copy), 0o600);
    assert_eq!(usernames_in(&copy), ["alice"]);
    // Nothing of the backup's own is left beside it (the database's own
    // -wal and -shm may be).
    let mut files: Vec<String> = std::fs::read_dir(sandbox.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("latchkey.db-"))
        .collect();
    files.sort();
    assert_eq!(files, ["copy.db", "latchkey.db", "victim"]);
}
