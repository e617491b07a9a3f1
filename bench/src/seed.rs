//! Seeding: databases filled through latchkey's own store functions, in one
//! transaction, with tokens made and hashed as a login makes them, and users
//! enrolled with a TOTP factor as a confirmed enrollment leaves them; the
//! large database cached under `target/bench-cache/`; the token files the
//! load scripts read; and the argon2 timing that also makes the seeded hash.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use latchkey::auth::password::PasswordHashing;
use latchkey::auth::token::Token;
use latchkey::auth::totp::Secret;
use latchkey::auth::{unix_now, Amr};
use latchkey::store::{self, sessions, totp, users, Store};
use sha2::{Digest, Sha256};

use crate::{progress, PASSWORD, SAMPLE_TOKENS, SESSION_LIFETIME_SECS, USERS};

/// A cached database is reseeded when its sessions expire sooner than this.
const CACHE_MIN_REMAINING_SECS: i64 = 30 * 86_400;
/// Bumped when the cached files' layout or content changes.
const CACHE_VERSION: u32 = 1;
/// The schema is part of the cache key: a changed schema reseeds.
const SCHEMA_SQL: &str = include_str!("../../schema.sql");

/// What [`seed`] stores: `valid` sessions (sampled), then `throwaway` ones,
/// all with the factors `amr`; and `totp_users` users with a TOTP factor.
pub struct SeedSpec {
    pub valid: usize,
    pub throwaway: usize,
    pub sample: usize,
    pub expires_at: i64,
    /// The sessions' `amr` bits ([`Amr::PASSWORD`] for a password login).
    pub amr: i64,
    pub totp_users: usize,
    pub progress: bool,
}

impl SeedSpec {
    /// `valid` password-login sessions expiring at `expires_at`, all sampled
    /// up to [`SAMPLE_TOKENS`], nothing else.
    pub fn sessions(valid: usize, expires_at: i64) -> SeedSpec {
        SeedSpec {
            valid,
            throwaway: 0,
            sample: SAMPLE_TOKENS,
            expires_at,
            amr: Amr::PASSWORD.bits(),
            totp_users: 0,
            progress: false,
        }
    }
}

pub struct Seeded {
    /// Up to `sample` valid tokens, spread evenly over the insertion order.
    pub sample: Vec<String>,
    pub throwaway: Vec<String>,
    /// The TOTP users' secrets, the `i`th of [`totp_user_name`]`(i)`.
    pub totp: Vec<Secret>,
}

pub fn user_name(i: usize) -> String {
    format!("bench-user-{i:03}")
}

pub fn totp_user_name(i: usize) -> String {
    format!("bench-totp-{i:05}")
}

/// Creates a database with [`USERS`] users (password [`PASSWORD`]), the
/// sessions of `spec` and its TOTP users (password [`PASSWORD`] too), in one
/// transaction, through latchkey's own store code.
pub fn seed(path: &Path, password_hash: &str, spec: &SeedSpec) -> Result<Seeded> {
    let store = Store::open(path, 1)?;
    let conn = store.connection()?;
    let now = unix_now();
    let tx = store::write(&conn).context("cannot start the seeding transaction")?;
    let mut user_ids = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let name = user_name(i);
        user_ids.push(users::insert(
            &tx,
            &users::NewUser {
                username: &name,
                username_folded: &name,
                password_hash,
                email: None,
                display_name: None,
                created_at: now,
            },
        )?);
    }
    let stride = (spec.valid / spec.sample.max(1)).max(1);
    let total = spec.valid + spec.throwaway;
    let mut seeded = Seeded {
        sample: Vec::with_capacity(spec.sample.min(spec.valid)),
        throwaway: Vec::with_capacity(spec.throwaway),
        totp: Vec::with_capacity(spec.totp_users),
    };
    let started = Instant::now();
    for (i, user_id) in (0..total).zip(user_ids.iter().cycle()) {
        let token = Token::generate()?;
        let hash = token.hash();
        let stored = sessions::insert(
            &tx,
            &hash.0,
            &sessions::NewSession {
                user_id: *user_id,
                created_at: now,
                expires_at: spec.expires_at,
                max_expires_at: spec.expires_at,
                ip: "127.0.0.1",
                user_agent: "latchkey-bench",
                amr: spec.amr,
            },
        )?;
        if stored == sessions::Inserted::KeyTaken {
            bail!("two seeded tokens share a lookup key (odds 2^-64 per pair); run again");
        }
        if i >= spec.valid {
            seeded.throwaway.push(token.expose().to_owned());
        } else if i % stride == 0 && seeded.sample.len() < spec.sample {
            seeded.sample.push(token.expose().to_owned());
        }
        if spec.progress && (i + 1) % 100_000 == 0 {
            progress(&format!(
                "      {} / {total} sessions ({:.1} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    for i in 0..spec.totp_users {
        let name = totp_user_name(i);
        let user_id = users::insert(
            &tx,
            &users::NewUser {
                username: &name,
                username_folded: &name,
                password_hash,
                email: None,
                display_name: None,
                created_at: now,
            },
        )?;
        // As `POST /me/totp` and its confirmation leave it, except that no
        // step is used yet (0), so any current code logs in once. The
        // recovery codes are left out: a login with a TOTP code never reads them.
        let secret = Secret::generate()?;
        totp::set_pending(&tx, user_id, secret.as_bytes(), now)?;
        totp::activate(&tx, user_id, secret.as_bytes(), 0, now)?;
        seeded.totp.push(secret);
    }
    tx.commit().context("cannot commit the seeded rows")?;
    // Fold the WAL into the file, so that copying the file alone copies everything.
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .context("cannot checkpoint the seeded database")?;
    if busy != 0 {
        bail!("cannot checkpoint {}: the database is busy", path.display());
    }
    drop(conn);
    drop(store);
    Ok(seeded)
}

/// The large database, from the cache when a usable copy is there; and its sample tokens.
pub fn large_database(
    exe: &Path,
    sessions: usize,
    password_hash: &str,
) -> Result<(PathBuf, Vec<String>)> {
    let cache = exe
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_owned)
        .join("bench-cache");
    let schema: String = Sha256::digest(SCHEMA_SQL.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = format!("sessions-{sessions}-v{CACHE_VERSION}-{schema}");
    let db = cache.join(format!("{stem}.db"));
    let tokens = cache.join(format!("{stem}.tokens"));
    let meta = cache.join(format!("{stem}.meta"));
    let wanted_sample = SAMPLE_TOKENS.min(sessions);

    let cached = fs::read_to_string(&meta).ok().and_then(|text| {
        let expires_at: i64 = text.trim().strip_prefix("expires_at=")?.parse().ok()?;
        let sample: Vec<String> = fs::read_to_string(&tokens)
            .ok()?
            .lines()
            .map(str::to_owned)
            .collect();
        let usable = expires_at > unix_now() + CACHE_MIN_REMAINING_SECS
            && sample.len() == wanted_sample
            && db.is_file();
        usable.then_some(sample)
    });
    if let Some(sample) = cached {
        progress(&format!(
            "using the cached {sessions}-session database {}",
            db.display()
        ));
        return Ok((db, sample));
    }

    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let _ = fs::remove_file(&meta); // incomplete until the meta file is back
    let partial = cache.join(format!("{stem}.db.partial"));
    remove_database(&partial);
    progress(&format!(
        "seeding {sessions} sessions into {} (once; later runs reuse it)",
        db.display()
    ));
    let started = Instant::now();
    let expires_at = unix_now() + SESSION_LIFETIME_SECS;
    let seeded = seed(
        &partial,
        password_hash,
        &SeedSpec {
            sample: wanted_sample,
            progress: true,
            ..SeedSpec::sessions(sessions, expires_at)
        },
    )
    .with_context(|| format!("cannot seed {}", partial.display()))?;
    remove_database(&db);
    fs::rename(&partial, &db)
        .with_context(|| format!("cannot move the seeded database to {}", db.display()))?;
    write_lines(&tokens, &seeded.sample)?;
    fs::write(&meta, format!("expires_at={expires_at}\n"))
        .with_context(|| format!("cannot write {}", meta.display()))?;
    progress(&format!(
        "      seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok((db, seeded.sample))
}

/// Replaces `to` with a copy of the database `from` (a checkpointed file,
/// so the file alone is the whole database).
pub fn copy_database(from: &Path, to: &Path) -> Result<()> {
    remove_database(to);
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Deletes an SQLite file and its WAL companions, if present.
pub fn remove_database(path: &Path) {
    let _ = fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let _ = fs::remove_file(companion);
    }
}

pub fn write_lines(path: &Path, lines: &[String]) -> Result<PathBuf> {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_owned())
}

/// Median time of one argon2 hash with `hashing`, and a hash of [`PASSWORD`].
pub fn time_argon2(hashing: &PasswordHashing) -> Result<(Duration, String)> {
    let hash = hashing.hash(PASSWORD)?; // also warms the working memory up
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        hashing.hash(PASSWORD)?;
        times.push(started.elapsed());
    }
    times.sort();
    let median = times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| anyhow!("no argon2 timing"))?;
    Ok((median, hash))
}
