//! argon2id password hashing: pure, synchronous and slow by design.
//!
//! Never call these from an async worker; they run on [`super::hasher`].

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordConfig;

/// Longest password accepted, in bytes (SPEC: refused with 400 before hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashing failed: bad parameters or the OS random generator (for the salt).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// argon2id with the configured cost parameters.
#[derive(Clone)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    /// Fails only for parameters argon2 refuses (config validation checks them first).
    pub fn new(config: &PasswordConfig) -> Result<PasswordHashing, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|e| HashError(e.to_string()))?;
        Ok(PasswordHashing { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a random salt.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashError(e.to_string()))
    }

    /// True when `password` matches `phc`, whatever parameters `phc` was made with.
    ///
    /// A malformed stored hash never matches (and is not an error to the caller).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self
                .argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// True when `phc` was made with other parameters than the configured ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm.as_str() != Algorithm::Argon2id.ident().as_str()
            || parsed.version != Some(Version::V0x13.into())
        {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(memory_kib: u32) -> PasswordHashing {
        PasswordHashing::new(&PasswordConfig {
            memory_kib,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn a_hash_is_argon2id_phc_and_verifies_only_its_password() {
        let h = cheap(64);
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(h.verify(&phc, "correct horse"));
        assert!(!h.verify(&phc, "correct horsE"));
        assert!(!h.verify("not a phc string", "correct horse"));
    }

    #[test]
    fn hashes_with_old_parameters_still_verify_but_need_a_rehash() {
        let old = cheap(64).hash("pw").unwrap();
        let new = cheap(128);
        assert!(new.verify(&old, "pw"));
        assert!(new.needs_rehash(&old));
        assert!(!new.needs_rehash(&new.hash("pw").unwrap()));
    }
}
