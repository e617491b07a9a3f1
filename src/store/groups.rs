//! The `groups` and `memberships` tables.
//!
//! Names are looked up by their folded key (`name_folded`), which the caller
//! computes: the naming rule is `auth::input::GroupName`'s. Lists of groups
//! come in folded-name order, the order `Remote-Groups` uses too (the token
//! check reads a user's groups in `sessions::find_by_token_hash`, in the
//! same statement as the session).

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

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
    conn: &Connection,
    name: &str,
    name_folded: &str,
    created_at: i64,
) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO groups (name, name_folded, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![name, name_folded, created_at])?;
    Ok(conn.last_insert_rowid())
}

/// Finds a group by the folded key of its name.
pub fn find_by_folded_name(
    conn: &Connection,
    name_folded: &str,
) -> Result<Option<Group>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, name, created_at FROM groups WHERE name_folded = ?1")?
        .query_row([name_folded], |r| {
            Ok(Group {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// Deletes a group and its memberships; returns how many memberships went,
/// or `None` when the group does not exist.
///
/// The memberships are deleted here, not left to `ON DELETE CASCADE` alone:
/// a connection without `foreign_keys` (the sqlite3 shell) would otherwise
/// leave rows behind for a later group to inherit.
pub fn delete(conn: &Connection, id: i64) -> Result<Option<usize>, StoreError> {
    let members = conn
        .prepare_cached("DELETE FROM memberships WHERE group_id = ?1")?
        .execute([id])?;
    let deleted = conn
        .prepare_cached("DELETE FROM groups WHERE id = ?1")?
        .execute([id])?;
    Ok((deleted == 1).then_some(members))
}

/// Every group with its member count, by folded name.
pub fn list(conn: &Connection) -> Result<Vec<GroupRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name, g.created_at,
                (SELECT count(*) FROM memberships AS m WHERE m.group_id = g.id)
         FROM groups AS g ORDER BY g.name_folded",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(GroupRow {
                name: r.get(0)?,
                created_at: r.get(1)?,
                members: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The users in a group, by folded username.
pub fn members(conn: &Connection, group_id: i64) -> Result<Vec<Member>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.username
         FROM memberships AS m JOIN users AS u ON u.id = m.user_id
         WHERE m.group_id = ?1
         ORDER BY u.username_folded",
    )?;
    let rows = stmt
        .query_map([group_id], |r| {
            Ok(Member {
                user_id: r.get(0)?,
                username: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Puts a user in a group; false when they were in it already.
pub fn add_member(conn: &Connection, group_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let added = conn
        .prepare_cached(
            "INSERT INTO memberships (user_id, group_id) VALUES (?1, ?2)
             ON CONFLICT (user_id, group_id) DO NOTHING",
        )?
        .execute([user_id, group_id])?;
    Ok(added == 1)
}

/// Takes a user out of a group; false when they were not in it.
pub fn remove_member(conn: &Connection, group_id: i64, user_id: i64) -> Result<bool, StoreError> {
    let removed = conn
        .prepare_cached("DELETE FROM memberships WHERE user_id = ?1 AND group_id = ?2")?
        .execute([user_id, group_id])?;
    Ok(removed == 1)
}

/// Takes a user out of every group (before the user is deleted; see
/// [`delete`] for why not by the cascade alone); returns how many.
pub fn remove_user_from_all(conn: &Connection, user_id: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM memberships WHERE user_id = ?1")?
        .execute([user_id])?)
}

/// One user's group names, in folded-name order (the order of
/// `names_by_user` and `Remote-Groups`).
pub fn names_of_user(conn: &Connection, user_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.name
         FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
         WHERE m.user_id = ?1
         ORDER BY g.name_folded",
    )?;
    let names = stmt
        .query_map([user_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// Every user's group names, by user id, each list in folded-name order;
/// users in no group are absent.
pub fn names_by_user(conn: &Connection) -> Result<BTreeMap<i64, Vec<String>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.user_id, g.name
         FROM memberships AS m JOIN groups AS g ON g.id = m.group_id
         ORDER BY m.user_id, g.name_folded",
    )?;
    let mut rows = stmt.query([])?;
    let mut by_user: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        by_user.entry(row.get(0)?).or_default().push(row.get(1)?);
    }
    Ok(by_user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user, users};

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
