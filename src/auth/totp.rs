//! The second factor's arithmetic: RFC 6238 TOTP (SHA-1, 6 digits, 30 s
//! steps, ±1 step), its secrets and `otpauth://` URIs, and recovery codes.
//!
//! Written out over `hmac` + `sha1` (RFC 4226's dynamic truncation is a
//! dozen lines) rather than a crate, so that the replay rule is visibly
//! ours: [`Secret::matching_step`] only ever accepts a step later than the
//! last one used, and the store records the step it accepted in the same
//! transaction as the session it grants. Checking a code costs three
//! HMACs, microseconds, not a password hash.

use hmac::{Hmac, KeyInit, Mac};
use rand::rngs::SysRng;
use rand::TryRng;
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::token::{RandomError, TokenHash};

/// Bytes in a TOTP secret: 160 bits, RFC 4226's recommendation.
pub const SECRET_BYTES: usize = 20;
/// Seconds per step.
pub const STEP_SECS: i64 = 30;
/// Digits in a code.
pub const DIGITS: usize = 6;
/// Recovery codes issued at a time.
pub const RECOVERY_CODES: usize = 10;
/// Base32 characters in a recovery code: 60 bits.
const RECOVERY_CHARS: usize = 12;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A TOTP secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_BYTES]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A new secret from the OS CSPRNG.
    pub fn generate() -> Result<Secret, RandomError> {
        let mut bytes = [0u8; SECRET_BYTES];
        SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| RandomError::new(e.to_string()))?;
        Ok(Secret(bytes))
    }

    /// The secret as stored; `None` unless it is [`SECRET_BYTES`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Secret> {
        bytes.try_into().ok().map(Secret)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps take it.
    pub fn base32(&self) -> String {
        base32(&self.0)
    }

    /// The `otpauth://` URI an authenticator app scans, for `username`.
    pub fn otpauth_uri(&self, issuer: &str, username: &str) -> String {
        let label = format!("{issuer}:{username}");
        format!(
            "otpauth://totp/{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            percent_encode(&label),
            self.base32(),
            percent_encode(issuer)
        )
    }

    /// The code of time step `step` (RFC 4226 with the step as counter).
    pub fn code(&self, step: i64) -> u32 {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let word = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        word % 10u32.pow(DIGITS as u32)
    }

    /// The step within ±1 of `now`'s whose code is `code`, provided it is
    /// later than `last_step` (a step once used never counts again).
    /// `None` for anything else, including a code that is not 6 digits.
    pub fn matching_step(&self, code: &str, now: i64, last_step: i64) -> Option<i64> {
        let code = parse_code(code)?;
        let current = now.div_euclid(STEP_SECS);
        // Every candidate is computed and compared, in constant time, so
        // the time taken says nothing about which one matched.
        let mut found = None;
        for step in [current - 1, current, current + 1] {
            let matches = self.code(step).to_be_bytes().ct_eq(&code.to_be_bytes());
            if bool::from(matches) && step > last_step && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

/// The step that `now` falls in.
pub fn step_of(now: i64) -> i64 {
    now.div_euclid(STEP_SECS)
}

/// Exactly [`DIGITS`] ASCII digits, spaces allowed between (as apps show them).
fn parse_code(code: &str) -> Option<u32> {
    let digits: String = code.chars().filter(|c| *c != ' ').collect();
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True when `text` has the shape of a TOTP code (to tell it from a
/// recovery code).
pub fn looks_like_code(text: &str) -> bool {
    parse_code(text).is_some()
}

/// A fresh set of recovery codes, shown once: `xxxx-xxxx-xxxx`, 60 bits each.
pub fn recovery_codes() -> Result<Vec<String>, RandomError> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 8];
            SysRng
                .try_fill_bytes(&mut bytes)
                .map_err(|e| RandomError::new(e.to_string()))?;
            let chars = base32(&bytes);
            let chars = &chars[..RECOVERY_CHARS].to_ascii_lowercase();
            Ok(format!("{}-{}-{}", &chars[..4], &chars[4..8], &chars[8..]))
        })
        .collect()
}

/// The hash a recovery code is stored and looked up by: SHA-256 of its
/// normalised form (letters uppercased, dashes and spaces dropped), so a
/// code typed in any case or grouping is found. The codes carry 60 random
/// bits, so a fast hash is enough, as for session tokens.
pub fn recovery_code_hash(code: &str) -> Option<TokenHash> {
    let normal: String = code
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = normal.len() == RECOVERY_CHARS && normal.bytes().all(|b| BASE32.contains(&b));
    valid.then(|| TokenHash::of_secret(&normal))
}

/// RFC 4648 base32, without padding.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Everything but unreserved characters percent-encoded (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 secret: ASCII "12345678901234567890".
    fn rfc_secret() -> Secret {
        Secret::from_bytes(b"12345678901234567890").unwrap()
    }

    #[test]
    fn the_rfc_6238_sha1_vectors_give_their_codes() {
        // Appendix B, the last six digits of the eight-digit codes.
        for (time, code) in [
            (59, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
            (20_000_000_000, 353_130),
        ] {
            assert_eq!(rfc_secret().code(step_of(time)), code, "T = {time}");
        }
    }

    #[test]
    fn a_code_counts_within_one_step_either_way_and_not_beyond() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let at = |step: i64| format!("{:06}", secret.code(step));
        let current = step_of(now);
        assert_eq!(secret.matching_step(&at(current), now, 0), Some(current));
        assert_eq!(
            secret.matching_step(&at(current - 1), now, 0),
            Some(current - 1)
        );
        assert_eq!(
            secret.matching_step(&at(current + 1), now, 0),
            Some(current + 1)
        );
        assert_eq!(secret.matching_step(&at(current - 2), now, 0), None);
        assert_eq!(secret.matching_step(&at(current + 2), now, 0), None);
        // As an app shows it, with a space.
        let spaced = format!("{} {}", &at(current)[..3], &at(current)[3..]);
        assert_eq!(secret.matching_step(&spaced, now, 0), Some(current));
    }

    #[test]
    fn a_used_step_and_every_earlier_one_are_refused() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let current = step_of(now);
        let code = format!("{:06}", secret.code(current));
        assert_eq!(secret.matching_step(&code, now, current), None);
        assert_eq!(secret.matching_step(&code, now, current + 1), None);
        let previous = format!("{:06}", secret.code(current - 1));
        assert_eq!(secret.matching_step(&previous, now, current - 1), None);
        assert_eq!(secret.matching_step(&code, now, current - 1), Some(current));
    }

    #[test]
    fn only_six_digits_are_a_code() {
        let secret = rfc_secret();
        for text in ["", "12345", "1234567", "12345a", "１２３４５６", "-12345"] {
            assert_eq!(secret.matching_step(text, 59, 0), None, "{text:?}");
        }
    }

    #[test]
    fn base32_follows_rfc_4648_and_the_uri_names_the_user() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(rfc_secret().base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let uri = rfc_secret().otpauth_uri("latchkey", "Ann Lee");
        assert_eq!(
            uri,
            "otpauth://totp/latchkey%3AAnn%20Lee?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=latchkey&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_are_ten_distinct_and_found_in_any_case_or_grouping() {
        let codes = recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let code = &codes[0];
        assert_eq!(code.len(), 14);
        let hash = recovery_code_hash(code).unwrap();
        let retyped = code.to_ascii_uppercase().replace('-', " ");
        assert!(recovery_code_hash(&retyped) == Some(hash));
        assert!(recovery_code_hash("abcd-efgh-ijk").is_none());
        assert!(recovery_code_hash("123456").is_none());
        assert!(!looks_like_code(code));
        assert!(looks_like_code("123 456"));
    }
}
