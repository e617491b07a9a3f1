//! argon2id password hashing: pure, synchronous and slow by design.
//!
//! Never call these from an async worker; they run on [`super::hasher`].
//! Hashes are standard PHC strings, so they verify with any argon2 library.

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::SysRng;
use rand::TryRng;
use subtle::ConstantTimeEq;

use crate::config::PasswordConfig;

/// Longest password accepted, in bytes (SPEC: refused with 400 before hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Salt length, in bytes (the PHC recommendation).
const SALT_BYTES: usize = 16;
/// Hash length, in bytes.
const OUTPUT_BYTES: usize = 32;

thread_local! {
    /// argon2's working memory (`memory_kib` KiB), kept by each thread that
    /// hashes. Allocating it per hash cost a page fault per KiB, and glibc
    /// kept freed 19 MiB buffers in its per-thread arenas: a login flood grew
    /// the process by hundreds of MiB. Reused, memory stays at one buffer
    /// per hashing thread.
    static WORK_MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 with this thread's reusable working memory.
fn argon2_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> bool {
    WORK_MEMORY.with(|memory| {
        let mut blocks = memory.borrow_mut();
        let needed = params.block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
            .is_ok()
    })
}

/// Frees this thread's argon2 working memory; for threads that hash once
/// (start-up, the CLI) rather than all day.
pub fn release_work_memory() {
    WORK_MEMORY.with(|memory| *memory.borrow_mut() = Vec::new());
}

/// Hashing failed: the OS random generator (for the salt) or bad parameters.
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

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a random salt.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        let mut salt = [0u8; SALT_BYTES];
        SysRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| HashError(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let mut out = [0u8; OUTPUT_BYTES];
        if !argon2_into(&argon2, &self.params, password.as_bytes(), &salt, &mut out) {
            return Err(HashError("argon2 refused the input".to_owned()));
        }
        let phc_error = |e: argon2::password_hash::phc::Error| HashError(e.to_string());
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| HashError(e.to_string()))?,
            salt: Some(Salt::new(&salt).map_err(phc_error)?),
            hash: Some(Output::new(&out).map_err(phc_error)?),
        };
        Ok(phc.to_string())
    }

    /// True when `password` matches `phc`, whatever parameters `phc` was made with.
    ///
    /// The comparison is constant-time. A malformed stored hash never matches
    /// (and is not an error to the caller).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let (Ok(algorithm), Some(Ok(version)), Ok(params)) = (
            Algorithm::try_from(parsed.algorithm.as_str()),
            parsed.version.map(Version::try_from),
            Params::try_from(&parsed),
        ) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let mut out = vec![0u8; expected.len()];
        argon2_into(&argon2, &params, password.as_bytes(), salt, &mut out)
            && bool::from(out.ct_eq(expected.as_bytes()))
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
    fn hashes_verify_with_the_argon2_crates_own_verifier_and_back() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = cheap(64).hash("pw").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32, 2, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(cheap(64).verify(&theirs, "pw"));
        assert!(!cheap(64).verify(&theirs, "pW"));
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
