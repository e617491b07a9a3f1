//! Codes as an authenticator app computes them, from the base32 secret
//! that enrollment shows.

use latchkey::auth::totp::{step_of, Secret};

/// RFC 4648 base32 (no padding) to bytes.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("{c} is not base32"));
        buffer = (buffer << 5) | value as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// The 6-digit code of the step `offset` steps from now's.
pub fn totp_code(secret_base32: &str, offset: i64) -> String {
    let secret = Secret::from_bytes(&base32_decode(secret_base32)).expect("a 160-bit secret");
    format!("{:06}", secret.code(step_of(super::now()) + offset))
}
