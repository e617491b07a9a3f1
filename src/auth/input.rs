//! Validated input: the only way a username, a password, a profile field,
//! a client id or a group name reaches a use case.
//!
//! Each limit lives here once. HTTP and the CLI parse what they were given
//! into these types and report the error in their own words; nothing past
//! the parse checks a length again.

use std::fmt;

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest password accepted, in bytes: refused before any hashing, so a
/// huge password costs nothing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest email or display name, in characters.
const MAX_PROFILE_CHARS: usize = 256;
/// Longest introspection client id, in bytes.
const MAX_CLIENT_ID_BYTES: usize = 64;
/// Longest group name, in characters (all ASCII, so bytes too).
pub const MAX_GROUP_NAME_CHARS: usize = 64;

/// Why an input was refused; the text names the rule, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("a username has 1 to 64 characters")]
    UsernameLength,
    #[error("a username has no control characters and no surrounding spaces")]
    UsernameCharacters,
    #[error("the password is empty")]
    PasswordEmpty,
    #[error("the password is longer than 1024 bytes")]
    PasswordTooLong,
    #[error("must be 1 to 256 characters without control characters")]
    ProfileField,
    #[error("use 1 to 64 letters, digits, '-', '_' or '.'")]
    ClientId,
    #[error("a group name has 1 to 64 characters, each A-Z, a-z, 0-9, '.', '_' or '-'")]
    GroupName,
}

/// A username as typed (case kept for display) with its folded key.
///
/// Names are unique ignoring case for all of Unicode: two names are the same
/// account exactly when their folded keys are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    name: String,
    folded: String,
}

impl Username {
    /// 1–64 characters, no control characters, no leading or trailing whitespace.
    pub fn parse(name: &str) -> Result<Username, InputError> {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_USERNAME_CHARS {
            return Err(InputError::UsernameLength);
        }
        if name.chars().any(char::is_control) || name.trim() != name {
            return Err(InputError::UsernameCharacters);
        }
        Ok(Username {
            name: name.to_owned(),
            folded: name.to_lowercase(),
        })
    }

    /// The name as it was typed.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The case-insensitive key: what the database's unique index and the
    /// login limiter compare.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A password within the size limit.
///
/// No `Debug` or `Display`: the text is reached only through
/// [`Password::expose`], so it is never printed or logged by accident.
pub struct Password(String);

impl Password {
    /// A password presented at login: at most [`MAX_PASSWORD_BYTES`] bytes
    /// (bytes, not characters). An empty one is merely wrong.
    pub fn parse(text: String) -> Result<Password, InputError> {
        if text.len() > MAX_PASSWORD_BYTES {
            return Err(InputError::PasswordTooLong);
        }
        Ok(Password(text))
    }

    /// A password to be set: as [`Password::parse`], and not empty.
    pub fn parse_new(text: String) -> Result<Password, InputError> {
        if text.is_empty() {
            return Err(InputError::PasswordEmpty);
        }
        Password::parse(text)
    }

    /// The text, for the hasher.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// An email address or display name: short, one line, printable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileField(String);

impl ProfileField {
    pub fn parse(text: &str) -> Result<ProfileField, InputError> {
        if text.is_empty()
            || text.chars().count() > MAX_PROFILE_CHARS
            || text.chars().any(char::is_control)
        {
            return Err(InputError::ProfileField);
        }
        Ok(ProfileField(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An introspection client id. It travels in HTTP Basic credentials, so it
/// holds no `:` and nothing that needs escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(id: &str) -> Result<ClientId, InputError> {
        let ok = (1..=MAX_CLIENT_ID_BYTES).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(InputError::ClientId);
        }
        Ok(ClientId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group name as typed (case kept for display) with its folded key.
///
/// Only ASCII letters, digits, `.`, `_` and `-`: names travel joined by
/// commas in the `Remote-Groups` header and are matched by access rules, so
/// none may hold a comma, a space, a quote or anything a proxy or a header
/// parser could split, trim or fold differently. Being ASCII, two names are
/// the same group exactly when their ASCII lowercase forms are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupName {
    name: String,
    folded: String,
}

impl GroupName {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub fn parse(name: &str) -> Result<GroupName, InputError> {
        let ok = (1..=MAX_GROUP_NAME_CHARS).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
        if !ok {
            return Err(InputError::GroupName);
        }
        Ok(GroupName {
            name: name.to_owned(),
            folded: name.to_ascii_lowercase(),
        })
    }

    /// The name as it was typed.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The case-insensitive key: what the database's unique index compares,
    /// and the order groups are listed in.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_have_1_to_64_chars_without_controls_or_edge_spaces() {
        assert!(Username::parse("a").is_ok());
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        assert!(Username::parse("Jane Doe").is_ok());
        for bad in ["", " alice", "alice ", "al\nice", "al\u{0}ice"] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Username::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn a_username_keeps_its_spelling_and_folds_for_all_of_unicode() {
        let name = Username::parse("ÄLice").unwrap();
        assert_eq!((name.as_str(), name.folded()), ("ÄLice", "älice"));
    }

    #[test]
    fn passwords_are_capped_in_bytes_and_new_ones_are_not_empty() {
        assert!(Password::parse("p".repeat(1024)).is_ok());
        assert_eq!(
            Password::parse("é".repeat(513)).err(),
            Some(InputError::PasswordTooLong)
        );
        assert!(Password::parse(String::new()).is_ok());
        assert_eq!(
            Password::parse_new(String::new()).err(),
            Some(InputError::PasswordEmpty)
        );
    }

    #[test]
    fn profile_fields_are_short_single_lines() {
        assert!(ProfileField::parse("alice@example.com").is_ok());
        for bad in ["", "two\nlines", &"x".repeat(257)] {
            assert!(ProfileField::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ids_are_plain_tokens() {
        assert!(ClientId::parse("nginx-proxy_1.a").is_ok());
        for bad in ["", "a:b", "a b", &"x".repeat(65)] {
            assert!(ClientId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn group_names_are_1_to_64_ascii_letters_digits_dots_underscores_and_dashes() {
        for good in ["a", "Admins", "team.ops-2_x", "-", ".", &"g".repeat(64)] {
            assert!(GroupName::parse(good).is_ok(), "{good:?}");
        }
        let long = "g".repeat(65);
        for bad in [
            "",
            "a,b",
            "a b",
            " admins",
            "admins ",
            "zoë",
            "ÄDMINS",
            "a\nb",
            "a\tb",
            "a;b",
            "a\"b",
            "a:b",
            "a/b",
            "a\u{0}b",
            "admins\u{200b}",
            &long,
        ] {
            assert_eq!(GroupName::parse(bad), Err(InputError::GroupName), "{bad:?}");
        }
    }

    #[test]
    fn a_group_name_keeps_its_spelling_and_folds_ascii_case() {
        let name = GroupName::parse("Ops-Team").unwrap();
        assert_eq!((name.as_str(), name.folded()), ("Ops-Team", "ops-team"));
        assert_eq!(name.to_string(), "Ops-Team");
    }
}
