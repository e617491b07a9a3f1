//! Child processes: a guard that kills and reaps a child whatever happens,
//! pinning a program to a core with `taskset`, finding a program on PATH,
//! the last line of a program's output for error messages, and a new
//! temporary directory of this process's own.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::Ctx;

/// A child process that is killed and reaped when dropped, whatever happened.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program`, pinned to `core` with taskset when pinning is on.
pub fn pinned(ctx: &Ctx, core: &str, program: &Path) -> Command {
    match &ctx.taskset {
        Some(taskset) => {
            let mut command = Command::new(taskset);
            command.arg("-c").arg(core).arg(program);
            command
        }
        None => Command::new(program),
    }
}

pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Creates `<temp dir>/<prefix>-<pid>-<nanoseconds>`, a directory no other
/// run has.
pub fn new_temp_dir(prefix: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(path)
}
