//! [`StoreError`]: what can go wrong in the storage layer, and how each
//! engine's errors map onto it (a constraint is a [`StoreError::Conflict`]
//! on either, a lost PostgreSQL server is [`StoreError::Unavailable`]).

use std::path::PathBuf;

use rusqlite::ErrorCode;

use super::pg;

/// What went wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "database {path} has schema version {found}, newer than this latchkey supports ({supported}); \
         run a newer latchkey"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path} is an SQLite file that latchkey did not create")]
    ForeignDatabase { path: PathBuf },
    #[error("cannot write backup {path}: {message}")]
    Backup { path: PathBuf, message: String },
    #[error("no database connection became free in time")]
    Busy(#[from] r2d2::Error),
    #[error("too many requests are waiting for the database")]
    Saturated,
    #[error("a row with that key already exists")]
    Conflict,
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(postgres::Error),
    /// The database server cannot be reached (restarting, down, full):
    /// answered 503 until it is back.
    #[error("the database is unavailable: {0}")]
    Unavailable(postgres::Error),
    #[error("database task failed: {0}")]
    Task(String),
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        let constraint = e.code().is_some_and(|code| {
            [
                SqlState::UNIQUE_VIOLATION,
                SqlState::CHECK_VIOLATION,
                SqlState::FOREIGN_KEY_VIOLATION,
                SqlState::NOT_NULL_VIOLATION,
            ]
            .contains(code)
        });
        if constraint {
            StoreError::Conflict
        } else if pg::unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Postgres(e)
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
            _ => StoreError::Sqlite(e),
        }
    }
}
