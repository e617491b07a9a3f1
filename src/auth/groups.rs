//! The administrator's group use cases: create and remove groups, list
//! them, and put users in and out of them, one call each, for the CLI.
//!
//! A membership counts from the next token check on: `/verify`, `/me` and
//! `/introspect` read a user's groups with the session, nothing caches
//! them. Like every [`Admin`] method, these block: call them from a thread
//! that may block.

use crate::store::Db;

use super::admin::{find_user, record, Admin, AdminError};
use super::audit::{Event, Subject};
use super::input::{GroupName, Username};
use super::unix_now;
use crate::store::{groups, users, StoreError};

/// A group as listed, with its member count.
pub use groups::GroupRow;
/// A user in a group.
pub use groups::Member;

/// What a change to one membership did: the names as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub group: String,
    pub username: String,
}

/// A user and their groups, as `/verify` would see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGroups {
    /// The name as stored.
    pub username: String,
    /// A disabled user has no valid session: `/verify` judges them as anonymous.
    pub disabled: bool,
    /// Sorted case-insensitively, as in `Remote-Groups`.
    pub groups: Vec<String>,
}

/// What removing a group did: its name as stored, and how many users were in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRemoved {
    pub name: String,
    pub members: usize,
}

impl Admin {
    /// Creates a group; [`AdminError::GroupExists`] when the name is taken
    /// in any case.
    pub fn add_group(&self, name: &GroupName) -> Result<(), AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        groups::insert(&tx, name.as_str(), name.folded(), unix_now()).map_err(|e| match e {
            StoreError::Conflict => AdminError::GroupExists(name.to_string()),
            other => other.into(),
        })?;
        let detail = format!("group {:?}", name.as_str());
        record(&tx, Event::GroupAdded, Subject::Nobody, &detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a group; its memberships go with it.
    pub fn remove_group(&self, name: &GroupName) -> Result<GroupRemoved, AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let group = find_group(&tx, name)?;
        let members = groups::delete(&tx, group.id)?
            .ok_or_else(|| AdminError::NoSuchGroup(name.to_string()))?;
        let detail = format!("group {:?}, {members} member(s)", group.name);
        record(&tx, Event::GroupRemoved, Subject::Nobody, &detail)?;
        tx.commit()?;
        Ok(GroupRemoved {
            name: group.name,
            members,
        })
    }

    /// A user's groups (what `latchkey access check --user` judges with).
    pub fn user_groups(&self, username: &Username) -> Result<UserGroups, AdminError> {
        let conn = self.store.conn()?;
        // One snapshot: the user and their memberships as of one moment.
        let found = crate::store::snapshot(&conn, |conn| {
            let Some(user) = users::find_by_folded_name(conn, username.folded())? else {
                return Ok(None);
            };
            let groups = groups::names_of_user(conn, user.id)?;
            Ok(Some((user, groups)))
        })?;
        let (user, groups) = found.ok_or_else(|| AdminError::NoSuchUser(username.to_string()))?;
        Ok(UserGroups {
            username: user.username,
            disabled: user.disabled,
            groups,
        })
    }

    /// Every group with its member count, sorted case-insensitively.
    pub fn groups(&self) -> Result<Vec<GroupRow>, AdminError> {
        let conn = self.store.conn()?;
        Ok(groups::list(&conn)?)
    }

    /// The users in a group, sorted case-insensitively by username.
    pub fn group_members(&self, name: &GroupName) -> Result<Vec<Member>, AdminError> {
        let conn = self.store.conn()?;
        let group = find_group(&conn, name)?;
        Ok(groups::members(&conn, group.id)?)
    }

    /// Puts a user in a group; [`AdminError::AlreadyMember`] when they are
    /// in it already (a mistake worth hearing about, like adding a user
    /// twice).
    pub fn add_member(
        &self,
        group: &GroupName,
        username: &Username,
    ) -> Result<Membership, AdminError> {
        self.change_membership(group, username, Event::MemberAdded, groups::add_member)
            .and_then(|(membership, added)| match added {
                true => Ok(membership),
                false => Err(AdminError::AlreadyMember {
                    user: membership.username,
                    group: membership.group,
                }),
            })
    }

    /// Takes a user out of a group; [`AdminError::NotMember`] when they
    /// are not in it.
    pub fn remove_member(
        &self,
        group: &GroupName,
        username: &Username,
    ) -> Result<Membership, AdminError> {
        self.change_membership(group, username, Event::MemberRemoved, groups::remove_member)
            .and_then(|(membership, removed)| match removed {
                true => Ok(membership),
                false => Err(AdminError::NotMember {
                    user: membership.username,
                    group: membership.group,
                }),
            })
    }

    /// Finds the group, then the user, and runs `change` on their ids in
    /// one immediate transaction, committed (and recorded as `event`) only
    /// when it changed something.
    fn change_membership(
        &self,
        group: &GroupName,
        username: &Username,
        event: Event,
        change: impl FnOnce(&dyn Db, i64, i64) -> Result<bool, StoreError>,
    ) -> Result<(Membership, bool), AdminError> {
        let conn = self.store.conn()?;
        let tx = crate::store::write(&conn)?;
        let found = find_group(&tx, group)?;
        let user = find_user(&tx, username)?;
        let changed = change(&tx, found.id, user.id)?;
        if changed {
            let detail = format!("group {:?}", found.name);
            let subject = Subject::Named(&user.username, username.folded());
            record(&tx, event, subject, &detail)?;
            tx.commit()?;
        }
        let membership = Membership {
            group: found.name,
            username: user.username,
        };
        Ok((membership, changed))
    }
}

fn find_group(conn: &dyn Db, name: &GroupName) -> Result<groups::Group, AdminError> {
    groups::find_by_folded_name(conn, name.folded())?
        .ok_or_else(|| AdminError::NoSuchGroup(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{test_store, test_user};

    fn admin() -> (tempfile::TempDir, Admin) {
        let (dir, store) = test_store();
        let config = crate::config::PasswordConfig {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        (dir, Admin::new(store, &config).unwrap())
    }

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).unwrap()
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn groups_are_created_once_in_any_case_and_listed_with_member_counts() {
        let (_dir, admin) = admin();
        test_user(&admin.store.connection().unwrap(), "alice");
        admin.add_group(&group("Ops")).unwrap();
        admin.add_group(&group("admins")).unwrap();
        let err = admin.add_group(&group("OPS")).unwrap_err();
        assert_eq!(err.to_string(), "group \"OPS\" already exists");
        admin.add_member(&group("ops"), &user("ALICE")).unwrap();
        let listed: Vec<_> = admin
            .groups()
            .unwrap()
            .into_iter()
            .map(|g| (g.name, g.members))
            .collect();
        assert_eq!(listed, [("admins".to_owned(), 0), ("Ops".to_owned(), 1)]);
    }

    #[test]
    fn membership_changes_name_what_is_wrong_in_one_line() {
        let (_dir, admin) = admin();
        test_user(&admin.store.connection().unwrap(), "bob");
        admin.add_group(&group("admins")).unwrap();
        let added = admin.add_member(&group("ADMINS"), &user("BOB")).unwrap();
        assert_eq!(
            added,
            Membership {
                group: "admins".to_owned(),
                username: "bob".to_owned()
            }
        );
        let cases = [
            (
                admin.add_member(&group("admins"), &user("bob")),
                "user \"bob\" is already in group \"admins\"",
            ),
            (
                admin.add_member(&group("ghosts"), &user("bob")),
                "no group \"ghosts\"",
            ),
            (
                admin.add_member(&group("admins"), &user("carol")),
                "no user \"carol\"",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
        admin.remove_member(&group("admins"), &user("bob")).unwrap();
        let err = admin
            .remove_member(&group("admins"), &user("bob"))
            .unwrap_err();
        assert_eq!(err.to_string(), "user \"bob\" is not in group \"admins\"");
    }

    #[test]
    fn a_users_groups_come_sorted_with_the_name_as_stored() {
        let (_dir, admin) = admin();
        let conn = admin.store.connection().unwrap();
        let new = users::NewUser {
            username: "Alice",
            username_folded: "alice",
            password_hash: "x",
            email: None,
            display_name: None,
            created_at: 1,
        };
        users::insert(&conn, &new).unwrap();
        drop(conn);
        for name in ["ops", "Admins"] {
            admin.add_group(&group(name)).unwrap();
            admin.add_member(&group(name), &user("alice")).unwrap();
        }
        let found = admin.user_groups(&user("ALICE")).unwrap();
        assert_eq!(
            found,
            UserGroups {
                username: "Alice".to_owned(),
                disabled: false,
                groups: vec!["Admins".to_owned(), "ops".to_owned()],
            }
        );
        let err = admin.user_groups(&user("bob")).unwrap_err();
        assert_eq!(err.to_string(), "no user \"bob\"");
    }

    #[test]
    fn removing_a_group_or_deleting_a_user_ends_their_memberships() {
        let (_dir, admin) = admin();
        let conn = admin.store.connection().unwrap();
        test_user(&conn, "alice");
        test_user(&conn, "bob");
        drop(conn);
        for name in ["admins", "dev"] {
            admin.add_group(&group(name)).unwrap();
            for member in ["alice", "bob"] {
                admin.add_member(&group(name), &user(member)).unwrap();
            }
        }
        let removed = admin.remove_group(&group("Admins")).unwrap();
        assert_eq!((removed.name.as_str(), removed.members), ("admins", 2));
        assert_eq!(
            admin
                .remove_group(&group("admins"))
                .unwrap_err()
                .to_string(),
            "no group \"admins\""
        );
        admin.delete_user(&user("alice")).unwrap();
        let members: Vec<_> = admin
            .group_members(&group("dev"))
            .unwrap()
            .into_iter()
            .map(|m| m.username)
            .collect();
        assert_eq!(members, ["bob"]);
        let users: Vec<_> = admin
            .users()
            .unwrap()
            .into_iter()
            .map(|u| (u.username, u.groups))
            .collect();
        assert_eq!(users, [("bob".to_owned(), vec!["dev".to_owned()])]);
    }
}
