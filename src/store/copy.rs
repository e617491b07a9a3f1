//! `latchkey db copy`: every table's rows from one database into another,
//! ids, hashes and times as they are, so that every password and every
//! session token works the same on the copy.
//!
//! Written against [`Db`] alone: the schemas of both engines are twins,
//! column for column (schema.sql, schema_pg.sql).

use super::db::{write, Db, DbExt, Engine, Row, Value};
use super::StoreError;

/// A column's kind, to read it from one engine and write it to the other.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    OptText,
    Blob,
}

use Kind::{Blob, Int, OptText, Text};

/// The tables copied, parents before children. `users.group_names` is
/// left out: the memberships' triggers rebuild it. `login_challenges` is
/// left out: a code page lives five minutes, and the server is stopped.
/// `login_limits` too: a server alone on its SQLite file counts in memory.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("id", Int),
            ("username", Text),
            ("username_folded", Text),
            ("password_hash", Text),
            ("email", OptText),
            ("display_name", OptText),
            ("disabled", Int),
            ("created_at", Int),
            ("credential_version", Int),
        ],
    ),
    (
        "groups",
        &[
            ("id", Int),
            ("name", Text),
            ("name_folded", Text),
            ("created_at", Int),
        ],
    ),
    ("memberships", &[("user_id", Int), ("group_id", Int)]),
    (
        "sessions",
        &[
            ("lookup_key", Int),
            ("token_hash", Blob),
            ("id", Int),
            ("user_id", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("max_expires_at", Int),
            ("ip", Text),
            ("user_agent", Text),
            ("amr", Int),
        ],
    ),
    (
        "clients",
        &[("id", Text), ("secret_hash", Blob), ("created_at", Int)],
    ),
    (
        "totp",
        &[
            ("user_id", Int),
            ("secret", Blob),
            ("last_step", Int),
            ("enrolled_at", Int),
        ],
    ),
    (
        "totp_pending",
        &[("user_id", Int), ("secret", Blob), ("created_at", Int)],
    ),
    ("recovery_codes", &[("user_id", Int), ("code_hash", Blob)]),
    (
        "audit",
        &[
            ("id", Int),
            ("at", Int),
            ("event", Text),
            ("username", OptText),
            ("username_folded", OptText),
            ("ip", OptText),
            ("user_agent", OptText),
            ("source", Text),
            ("detail", Text),
        ],
    ),
];

/// Tables whose id the target hands out itself afterwards (PostgreSQL
/// identity columns): their sequences must start past the copied ids.
const IDENTITIES: &[&str] = &["users", "groups", "audit"];

/// How many rows each table received, in [`TABLES`] order.
pub type Copied = Vec<(&'static str, usize)>;

/// A value read from the source, owned until it is written.
enum Owned {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    Blob(Vec<u8>),
}

impl Owned {
    fn read(row: &Row<'_>, i: usize, kind: Kind) -> Result<Owned, StoreError> {
        Ok(match kind {
            Int => Owned::Int(row.int(i)?),
            Text => Owned::Text(row.text(i)?),
            OptText => Owned::OptText(row.opt_text(i)?),
            Blob => Owned::Blob(row.blob(i)?),
        })
    }

    fn value(&self) -> Value<'_> {
        match self {
            Owned::Int(v) => Value::Int(*v),
            Owned::Text(v) => Value::Text(v),
            Owned::OptText(v) => Value::OptText(v.as_deref()),
            Owned::Blob(v) => Value::Blob(v),
        }
    }
}

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target database is not empty ({table} has rows); copy only into a new database")]
    NotEmpty { table: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies every table of `from` into the empty `to`, in one transaction on
/// each side: the copy is whole, or nothing was written.
pub fn copy(from: &dyn Db, to: &dyn Db) -> Result<Copied, CopyError> {
    let tx = write(to)?;
    for (table, _) in TABLES {
        let sql = format!("SELECT 1 FROM {table} LIMIT 1");
        if tx.row(&sql, &[], |_| Ok(()))?.is_some() {
            return Err(CopyError::NotEmpty { table });
        }
    }
    let (copied, last_id) = super::db::snapshot(from, |from| {
        let mut copied = Vec::with_capacity(TABLES.len());
        for (table, columns) in TABLES {
            copied.push((*table, copy_table(from, &tx, table, columns)?));
        }
        let last_id = from.one("SELECT last_id FROM session_counter", &[], |r| r.int(0))?;
        Ok((copied, last_id))
    })?;
    // The copied sessions moved the counter to their highest id; the
    // source may have handed out higher ones since deleted.
    tx.execute(
        "UPDATE session_counter SET last_id = ?1 WHERE last_id < ?1",
        &[Value::Int(last_id)],
    )?;
    if tx.engine() == Engine::Postgres {
        for table in IDENTITIES {
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                               (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            );
            tx.row(&sql, &[], |_| Ok(()))?;
        }
    }
    tx.commit()?;
    Ok(copied)
}

/// Copies one table's rows; returns how many.
fn copy_table(
    from: &dyn Db,
    to: &dyn Db,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<usize, StoreError> {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut count = 0;
    let mut failed = None;
    from.query(&select, &[], &mut |row| {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| Owned::read(row, i, *kind))
            .collect::<Result<Vec<_>, _>>()?;
        let params: Vec<Value<'_>> = values.iter().map(Owned::value).collect();
        if let Err(e) = to.execute(&insert, &params) {
            failed = Some(e);
            return Err(StoreError::Task(format!("cannot copy a row of {table}")));
        }
        count += 1;
        Ok(())
    })
    .map_err(|e| failed.take().unwrap_or(e))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sessions, test_store, test_user, totp, users};

    #[test]
    fn every_row_arrives_as_it_was_and_a_second_copy_is_refused() {
        let (_dir, source) = test_store();
        let (_dir2, target) = test_store();
        let from = source.connection().unwrap();
        let alice = test_user(&from, "alice");
        let admins = crate::store::groups::insert(&from, "Admins", "admins", 5).unwrap();
        crate::store::groups::add_member(&from, admins, alice).unwrap();
        let session = sessions::NewSession {
            user_id: alice,
            created_at: 1,
            expires_at: 4_000_000_000,
            max_expires_at: 4_000_000_000,
            ip: "127.0.0.1",
            user_agent: "ua",
            amr: 3,
        };
        sessions::insert(&from, &[9; 32], &session).unwrap();
        totp::activate(&from, alice, &[7; 20], 12, 3).unwrap();
        totp::replace_recovery_codes(&from, alice, &[[1; 32]]).unwrap();
        crate::store::clients::insert(&from, "proxy", &[2; 32], 6).unwrap();

        let to = target.connection().unwrap();
        // A fresh SQLite store holds nothing: the copy goes in.
        let copied = copy(&from, &to).unwrap();
        let rows = |name| copied.iter().find(|(t, _)| *t == name).unwrap().1;
        assert_eq!(
            (rows("users"), rows("sessions"), rows("memberships")),
            (1, 1, 1)
        );
        let row = sessions::find_by_token_hash(&to, &[9; 32])
            .unwrap()
            .unwrap();
        assert_eq!((row.username.as_str(), row.amr), ("alice", 3));
        assert_eq!(row.groups, ["Admins"]);
        assert_eq!(
            users::find_by_id(&to, alice).unwrap(),
            users::find_by_id(&from, alice).unwrap()
        );
        assert_eq!(totp::find(&to, alice).unwrap().unwrap().last_step, 12);
        assert!(totp::use_recovery_code(&to, alice, &[1; 32]).unwrap());
        assert!(matches!(
            copy(&from, &to),
            Err(CopyError::NotEmpty { table: "users" })
        ));
    }
}
