//! The session cookie, built from `[session]`.

use crate::config::SessionConfig;

/// Cookie attributes shared by setting and clearing.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    pub domain: String,
    pub secure: bool,
}

impl CookieSettings {
    /// The cookie settings of `[session]`.
    pub fn from_config(config: &SessionConfig) -> CookieSettings {
        CookieSettings {
            name: config.cookie_name.clone(),
            domain: config.cookie_domain.clone(),
            secure: config.cookie_secure,
        }
    }

    /// `Set-Cookie` value carrying `token`, living `max_age_secs` (until
    /// `max_expires_at`; the server still enforces the idle expiry).
    pub fn set(&self, token: &str, max_age_secs: i64) -> String {
        self.build(token, max_age_secs.max(0))
    }

    /// `Set-Cookie` value that removes the cookie from the browser.
    pub fn clear(&self) -> String {
        self.build("", 0)
    }

    fn build(&self, value: &str, max_age_secs: i64) -> String {
        let mut cookie = format!("{}={value}; Path=/; HttpOnly; SameSite=Lax", self.name);
        if self.secure {
            cookie.push_str("; Secure");
        }
        if !self.domain.is_empty() {
            cookie.push_str("; Domain=");
            cookie.push_str(&self.domain);
        }
        cookie.push_str(&format!("; Max-Age={max_age_secs}"));
        cookie
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_has_the_spec_attributes() {
        let plain = CookieSettings {
            name: "sid".into(),
            domain: String::new(),
            secure: false,
        };
        assert_eq!(
            plain.set("tok", 60),
            "sid=tok; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
        let shared = CookieSettings {
            name: "sid".into(),
            domain: ".example.com".into(),
            secure: true,
        };
        assert_eq!(
            shared.clear(),
            "sid=; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=.example.com; Max-Age=0"
        );
    }
}
