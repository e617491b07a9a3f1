//! The `groups` and `memberships` tables.
//!
//! Names are looked up by their folded key (`name_folded`), which the caller
//! computes: the naming rule is `auth::input::GroupName`'s. Lists of groups
//! come in folded-name order, the order `Remote-Groups` uses too (the token
//! check reads a user's groups in `sessions::find_by_token_hash`, in the
//! same statement as the session).

use std::collections::BTreeMap;

use super::db::{params, Db, DbExt};
use super::StoreError;

/// A group row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
}

/// A group as listed, with how many users are in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub name: String,
    pub created_at: i64,
    pub members: i64,
}

/// A user in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
}

/// Inserts a group; [`StoreError::Conflict`] when the name is taken in any
/// case (or breaks the schema's naming rule).
pub fn insert(
    db: &dyn Db,
    name: &str,
    name_folded: &str,
    created_at: i64,
) -> Result<i64, StoreError> {
    db.one(
        "INSERT INTO groups (name, name_folded, created_at) VALUES (?1, ?2, ?3) RETURNING id",
        params![name, name_folded, created_at],
        |r| r.int(0),
    )
}

/// Finds a group by the folded key of its name.
pub fn find_by_folded_name(db: &dyn Db, name_folded: &str) -> Result<Option<Group>, StoreError> {
    db.row(
        "SELECT id, name, created_at FROM groups WHERE name_folded = ?1",
        params![name_folded],
        |r| {
            Ok(Group {
                id: r.int(0)?,
                name: r.text(1)?,
                created_at: r.int(2)?,
            })
        },
    )
}

/// Deletes a group and its memberships; returns how many memberships went,
/// or `None` when the group does not exist.
///
/// The memberships are deleted here, not left to `ON DELETE CASCADE` alone:
/// a connection without `foreign_keys` (the sqlite3 shell) would otherwise
/// leave rows behind for a later group to inherit.
pub fn delete(db: &dyn Db, id: i64) -> Result<Option<usize>, StoreError> {
    let members = db.execute("DELETE FROM memberships WHERE group_id = ?1", params![id])?;
    let deleted = db.execute("DELETE FROM groups WHERE id = ?1", params![id])?;
    Ok((deleted == 1).then_some(members))
}

/// Every group with its member count, by folded name.
pub fn list(db: &dyn Db) -> Result<Vec<GroupRow>, StoreError> {
    db.rows(
        "SELECT g.name, g.created_at,
                (SELECT count(*) FROM memberships AS m WHERE m.group_id = g.id)
         FROM groups AS g ORDER BY g.name_folded",
        &[],
        |r| {
            Ok(GroupRow {
                name: r.text(0)?,
                created_at: r.int(1)?,
                members: r.int(2)?,
            })
        },
    )
}

/// The users in a group, by folded username.
pub fn members(db: &dyn Db, group_id: i64) -> Result<Vec<Member>, StoreError> {
    db.rows(
        "SELECT u.id, u.username
         FROM memberships AS m JOIN users AS u ON u.id = m.user_id
         WHERE m.group_id = ?1
         ORDER BY u.username_folded",
        params![group_id],
        |r| {
            Ok(Member {
                user_id: r.int(0)?,
                username: r.text(1)?,
            })
        },
    )
}

/// Puts a user in a group; false when they were in it already.
pub fn add_member(db: &dyn Db, group_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let added = db.execute(
        "INSERT INTO memberships (user_id, group_id) VALUES (?1, ?2)
         ON CONFLICT (user_id, group_id) DO NOTHING",
        params![user_id, group_id],
    )?;
    Ok(added == 1)
}

/// Takes a user out of a group; false when they were not in it.
pub fn remove_member(db: &dyn Db, group_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let removed = db.execute(
        "DELETE FROM memberships WHERE user_id = ?1 AND group_id = ?2",
        params![user_id, group_id],
    )?;
    Ok(removed == 1)
}

/// Takes a user out of every group (before the user is deleted; see
/// [`delete`] for why not by the cascade alone); returns how many.
pub fn remove_user_from_all(db: &dyn Db, user_id: i64) -> Result<usize, StoreError> {
    db.execute(
        "DELETE FROM memberships WHERE user_id = ?1",
        params![user_id],
    )
}

/// One user's group names, in folded-name order (the order of
/// `names_by_user` and `Remote-Groups`).
pub fn names_of_user(db: &dyn Db, user_id: i64) -> Result<Vec<String>, StoreError> {
    db.rows(
        "SELECT g.name
         FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
         WHERE m.user_id = ?1
         ORDER BY g.name_folded",
        params![user_id],
        |r| r.text(0),
    )
}

/// Every user's group names, by user id, each list in folded-name order;
/// users in no group are absent.
pub fn names_by_user(db: &dyn Db) -> Result<BTreeMap<i64, Vec<String>>, StoreError> {
    let mut by_user: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    db.query(
        "SELECT m.user_id, g.name
         FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
         ORDER BY m.user_id, g.name_folded",
        &[],
        &mut |row| {
            by_user.entry(row.int(0)?).or_default().push(row.text(1)?);
            Ok(())
        },
    )?;
    Ok(by_user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user, users};
    use rusqlite::Connection;

    fn group(conn: &Connection, name: &str) -> i64 {
        insert(conn, name, &name.to_ascii_lowercase(), 7).unwrap()
    }

    #[test]
    fn group_names_are_unique_ignoring_case_and_keep_their_spelling() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let id = group(&conn, "Admins");
        assert!(matches!(
            insert(&conn, "aDMINS", "admins", 8),
            Err(StoreError::Conflict)
        ));
        let found = find_by_folded_name(&conn, "admins").unwrap().unwrap();
        assert_eq!(
            found,
            Group {
                id,
                name: "Admins".to_owned(),
                created_at: 7
            }
        );
        assert!(find_by_folded_name(&conn, "Admins").unwrap().is_none());
    }

    #[test]
    fn the_schema_refuses_a_name_that_would_break_the_groups_header() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let long = "x".repeat(65);
        for bad in ["", "a,b", "a b", "zoë", "a\nb", &long] {
            assert!(
                matches!(
                    insert(&conn, bad, &bad.to_lowercase(), 1),
                    Err(StoreError::Conflict)
                ),
                "{bad:?}"
            );
        }
        // A folded key that is not the name's lowercase would let two
        // spellings of one name in.
        assert!(insert(&conn, "Ops", "ops2", 1).is_err());
        assert!(insert(&conn, &"x".repeat(64), &"x".repeat(64), 1).is_ok());
        assert!(insert(&conn, "A-Z_a.z-09", "a-z_a.z-09", 1).is_ok());
    }

    #[test]
    fn memberships_are_added_once_listed_in_order_and_removed() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        let bob = users::insert(
            &conn,
            &users::NewUser {
                username: "Bob",
                username_folded: "bob",
                password_hash: "x",
                email: None,
                display_name: None,
                created_at: 1,
            },
        )
        .unwrap();
        let admins = group(&conn, "admins");
        let dev = group(&conn, "Dev");
        let beta = group(&conn, "beta");
        assert!(add_member(&conn, dev, alice).unwrap());
        assert!(add_member(&conn, admins, alice).unwrap());
        assert!(add_member(&conn, beta, alice).unwrap());
        assert!(!add_member(&conn, admins, alice).unwrap());
        assert!(add_member(&conn, admins, bob).unwrap());

        let names: Vec<_> = list(&conn)
            .unwrap()
            .into_iter()
            .map(|g| (g.name, g.members))
            .collect();
        assert_eq!(
            names,
            [
                ("admins".to_owned(), 2),
                ("beta".to_owned(), 1),
                ("Dev".to_owned(), 1)
            ]
        );
        let members: Vec<_> = members(&conn, admins)
            .unwrap()
            .into_iter()
            .map(|m| (m.user_id, m.username))
            .collect();
        assert_eq!(
            members,
            [(alice, "alice".to_owned()), (bob, "Bob".to_owned())]
        );
        let by_user = names_by_user(&conn).unwrap();
        assert_eq!(by_user[&alice], ["admins", "beta", "Dev"]);
        assert_eq!(by_user[&bob], ["admins"]);
        assert_eq!(names_of_user(&conn, alice).unwrap(), by_user[&alice]);
        assert_eq!(names_of_user(&conn, bob).unwrap(), ["admins"]);
        assert!(names_of_user(&conn, bob + 1).unwrap().is_empty());

        assert!(remove_member(&conn, admins, alice).unwrap());
        assert!(!remove_member(&conn, admins, alice).unwrap());
        assert_eq!(names_by_user(&conn).unwrap()[&alice], ["beta", "Dev"]);
    }

    #[test]
    fn deleting_a_group_or_a_user_deletes_their_memberships() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        let alice = test_user(&conn, "alice");
        let bob = test_user(&conn, "bob");
        let admins = group(&conn, "admins");
        let dev = group(&conn, "dev");
        for (g, u) in [(admins, alice), (admins, bob), (dev, alice), (dev, bob)] {
            add_member(&conn, g, u).unwrap();
        }
        assert_eq!(delete(&conn, admins).unwrap(), Some(2));
        assert_eq!(delete(&conn, admins).unwrap(), None);
        assert_eq!(remove_user_from_all(&conn, alice).unwrap(), 1);
        assert!(users::delete(&conn, alice).unwrap());
        // A user deleted by the cascade alone leaves nothing behind either.
        assert!(users::delete(&conn, bob).unwrap());
        let left: i64 = conn
            .query_row("SELECT count(*) FROM memberships", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        // A new group of the old name starts empty.
        let again = group(&conn, "admins");
        assert!(members(&conn, again).unwrap().is_empty());
    }

    #[test]
    fn memberships_go_with_their_group_and_user_even_without_the_cascade() {
        let (_dir, store) = test_store();
        let conn = store.connection().unwrap();
        // As the sqlite3 shell or another tool would run.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let bob = test_user(&conn, "bob");
        let alice = test_user(&conn, "alice"); // the newest: her id comes back
        let admins = group(&conn, "admins");
        let dev = group(&conn, "dev");
        for (g, u) in [(admins, alice), (admins, bob), (dev, alice)] {
            add_member(&conn, g, u).unwrap();
        }
        assert_eq!(delete(&conn, admins).unwrap(), Some(2));
        assert_eq!(remove_user_from_all(&conn, alice).unwrap(), 1);
        users::delete(&conn, alice).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM memberships", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        // The next user takes the deleted one's id, and gets no group from it.
        assert_eq!(test_user(&conn, "carol"), alice);
        assert!(names_by_user(&conn).unwrap().is_empty());
    }
}
