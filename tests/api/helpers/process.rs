//! The real `latchkey` binary, run as an administrator would: each test in
//! its own temporary directory ([`Sandbox`]), commands run to completion
//! ([`execute`]), and `latchkey serve` as a child process whose listening
//! address is read from its log ([`Server`]). The one place that starts it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::app::Api;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");
/// No command may take longer than this; a hang fails the test instead.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How `latchkey serve` announces the admin password it created.
pub const ADMIN_PASSWORD_PREFIX: &str = "Created user \"admin\" with password: ";
/// How `latchkey serve` announces its address, in its log on stderr.
const LISTENING: &str = "latchkey listening on http://";

/// How a finished command ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    /// Exit status 1 with exactly one `error: ` line on stderr and nothing on stdout.
    #[track_caller]
    pub fn assert_error(&self) -> &str {
        assert_eq!(self.code, 1, "expected exit status 1: {self:#?}");
        assert_eq!(self.stdout, "", "nothing on stdout on error: {self:#?}");
        assert!(
            self.stderr.starts_with("error: ")
                && self.stderr.ends_with('\n')
                && self.stderr.lines().count() == 1,
            "expected one `error: ` line on stderr: {self:#?}"
        );
        self.stderr.trim_end()
    }

    /// Exit status 2, usage on stderr, nothing on stdout.
    #[track_caller]
    pub fn assert_usage_error(&self) {
        assert_eq!(self.code, 2, "expected exit status 2: {self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.contains("Usage: latchkey"),
            "expected an error and the usage on stderr: {self:#?}"
        );
    }
}

/// A temporary working directory holding the database of one test: a
/// SQLite file in it, or under `LATCHKEY_TEST_BACKEND=postgres` a
/// PostgreSQL database of its own (dropped with the sandbox).
pub struct Sandbox {
    dir: tempfile::TempDir,
    cheap_passwords: bool,
    /// The PostgreSQL database the commands use, when not the file.
    database_url: Option<String>,
    /// latchkey's store on that database, for the fixtures; opened on first use.
    postgres_store: std::sync::OnceLock<latchkey::store::Store>,
}

impl Sandbox {
    /// A sandbox whose commands hash passwords with the cheapest argon2, on
    /// the suite's backend.
    pub fn new() -> Sandbox {
        Sandbox::on(
            super::postgres::on_postgres()
                .then(|| super::postgres::shared_cluster().create_database()),
        )
    }

    /// A sandbox on a SQLite file whatever the suite's backend: for tests
    /// of what only the file has (its modes, its journal, backups,
    /// migrations of old files, crashes mid-write).
    pub fn on_sqlite_file() -> Sandbox {
        Sandbox::on(None)
    }

    fn on(database_url: Option<String>) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            cheap_passwords: true,
            database_url,
            postgres_store: std::sync::OnceLock::new(),
        }
    }

    /// The PostgreSQL database's URL, when the sandbox is on one.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// latchkey's store on the sandbox's PostgreSQL database, if it is on one.
    pub fn postgres_store(&self) -> Option<&latchkey::store::Store> {
        let url = self.database_url.as_deref()?;
        Some(self.postgres_store.get_or_init(|| {
            latchkey::store::Store::open_postgres(url, 2).expect("open the test database")
        }))
    }

    /// A sandbox whose commands hash passwords with the SPEC's argon2
    /// parameters, for tests that measure the real cost.
    #[allow(dead_code)] // Only tests/load.rs measures.
    pub fn with_spec_passwords() -> Sandbox {
        let mut sandbox = Sandbox::new();
        sandbox.cheap_passwords = false;
        sandbox
    }

    /// The directory itself: the commands' current directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("latchkey.db")
    }

    /// The binary in this directory with no LATCHKEY_ variable from outside.
    pub fn bare_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LATCHKEY_") {
                cmd.env_remove(name);
            }
        }
        cmd.env_remove("RUST_LOG");
        cmd
    }

    /// The binary on this sandbox's database (with cheap argon2, unless
    /// made [`Sandbox::with_spec_passwords`]).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_command(args);
        cmd.env("LATCHKEY_DATABASE__PATH", self.db_path());
        if let Some(url) = &self.database_url {
            cmd.env("LATCHKEY_DATABASE__URL", url);
        }
        if self.cheap_passwords {
            cmd.env("LATCHKEY_PASSWORD__MEMORY_KIB", "8")
                .env("LATCHKEY_PASSWORD__ITERATIONS", "1");
        }
        cmd
    }

    /// [`Sandbox::command`] for a server: on a free loopback port, one worker.
    pub fn serve_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.env("LATCHKEY_SERVER__LISTEN", "127.0.0.1:0")
            .env("LATCHKEY_SERVER__WORKERS", "1");
        cmd
    }

    /// Runs `latchkey ARGS` to completion, `stdin` piped in (or /dev/null).
    pub fn latchkey(&self, args: &[&str], stdin: Option<&str>) -> Run {
        execute(self.command(args), stdin.map(str::as_bytes))
    }

    /// `user add NAME --password-stdin`, which must succeed; returns the id.
    pub fn add_user(&self, name: &str, password: &str) -> i64 {
        self.latchkey(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        )
        .assert_ok();
        self.user_id(name)
    }
}

/// `cmd` run by `sh` after the shell commands `prelude`, then `exec`-ed:
/// the same program, arguments, directory and environment, in the same
/// process (so `$$` in `prelude` is its PID), with what `prelude` set up,
/// e.g. `umask 000`. Tests cannot change the umask of their own process: it
/// is shared by every thread, so every test running at the same time.
pub fn through_shell(cmd: &Command, prelude: &str) -> Command {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("{prelude}\nexec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        shell.current_dir(dir);
    }
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

/// Kills a child process when dropped (by its own PID), so a failed
/// assertion never leaves a process running.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion within [`DEADLINE`], feeding it `stdin`.
pub fn execute(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let description = format!("{cmd:?}");
    let mut child = ChildGuard(cmd.spawn().expect("start latchkey"));
    if let Some(input) = stdin {
        let mut pipe = child.0.stdin.take().expect("stdin pipe");
        let input = input.to_vec();
        // The command may exit without reading it all: ignore a broken pipe.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = read_all(child.0.stdout.take().expect("stdout pipe"));
    let stderr = read_all(child.0.stderr.take().expect("stderr pipe"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for latchkey") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{description} did not finish within {DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(5));
    };
    let text = |h: thread::JoinHandle<Vec<u8>>| {
        String::from_utf8(h.join().expect("reader thread")).expect("UTF-8 output")
    };
    Run {
        code: status.code().expect("exited, not killed by a signal"),
        stdout: text(stdout),
        stderr: text(stderr),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

enum Line {
    Out(String),
    Err(String),
}

/// Sends each line of `pipe` through `tx` until EOF; a line that is not
/// UTF-8 is kept (lossily), so the reading never stops early.
fn forward_lines(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Line>,
    line: fn(String) -> Line,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut bytes = Vec::new();
        while matches!(reader.read_until(b'\n', &mut bytes), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
            if tx.send(line(text)).is_err() {
                break;
            }
            bytes.clear();
        }
    });
}

/// A running `latchkey serve` child on a port of its choosing; killed when
/// dropped. Everything it writes is kept, line by line.
pub struct Server {
    child: ChildGuard,
    lines: mpsc::Receiver<Line>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// `http://127.0.0.1:<port>`, as the server announced it.
    address: String,
}

impl Server {
    /// Starts `latchkey ARGS` (a serve) in `sandbox` with [`Sandbox::serve_command`].
    pub fn start(sandbox: &Sandbox, args: &[&str]) -> Server {
        Server::spawn(sandbox.serve_command(args))
    }

    /// Starts `cmd`, a `latchkey serve` (see [`Sandbox::serve_command`]),
    /// and waits for the log line that says where it listens.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().expect("start latchkey serve"));
        let (tx, lines) = mpsc::channel();
        let out = child.0.stdout.take().expect("stdout pipe");
        let err = child.0.stderr.take().expect("stderr pipe");
        forward_lines(out, tx.clone(), Line::Out);
        forward_lines(err, tx, Line::Err);
        let mut server = Server {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Vec::new(),
            address: String::new(),
        };
        let listening = server.wait_for_stderr(LISTENING);
        let address = listening
            .split_once(LISTENING)
            // Up to a space (text log) or the closing quote (JSON log).
            .and_then(|(_, rest)| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .filter(|authority| {
                authority
                    .rsplit_once(':')
                    .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
            })
            .unwrap_or_else(|| panic!("no address in {listening:?}"));
        server.address = format!("http://{address}");
        server
    }

    fn receive(&mut self, timeout: Duration) -> Result<(), mpsc::RecvTimeoutError> {
        match self.lines.recv_timeout(timeout)? {
            Line::Out(line) => self.stdout.push(line),
            Line::Err(line) => self.stderr.push(line),
        }
        Ok(())
    }

    /// The first stderr line containing `needle`, waiting at most [`DEADLINE`].
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        self.wait_for(needle, |server| &server.stderr)
    }

    /// The first stdout line containing `needle`, waiting at most [`DEADLINE`].
    pub fn wait_for_stdout(&mut self, needle: &str) -> String {
        self.wait_for(needle, |server| &server.stdout)
    }

    fn wait_for(&mut self, needle: &str, lines: fn(&Server) -> &Vec<String>) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = lines(self).iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = DEADLINE.saturating_sub(started.elapsed());
            if let Err(e) = self.receive(left) {
                panic!(
                    "no line with {needle:?} ({e:?}); stdout {:#?}, stderr {:#?}",
                    self.stdout, self.stderr
                );
            }
        }
    }

    /// Waits for the first-start message; returns the admin password in it.
    pub fn admin_password(&mut self) -> String {
        let line = self.wait_for_stdout(ADMIN_PASSWORD_PREFIX);
        line.strip_prefix(ADMIN_PASSWORD_PREFIX)
            .unwrap_or_else(|| panic!("not at the start of the line: {line:?}"))
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The calls tests make, to this server.
    pub fn api(&self) -> Api {
        Api::new(self.address.clone())
    }

    /// The server's process id (to read its memory, or send it a signal).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Kills the server (SIGKILL: no shutdown code runs) and returns
    /// everything it wrote: (stdout, stderr) lines.
    pub fn stop(mut self) -> (Vec<String>, Vec<String>) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.drain()
    }

    /// Sends `signal` to the server, as `kill -SIG` would.
    #[cfg(target_os = "linux")]
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a real process id");
        rustix::process::kill_process(pid, signal).expect("send the signal");
    }

    /// Waits (at most [`DEADLINE`]) for the server to exit on its own;
    /// returns its exit status and everything it wrote: (stdout, stderr).
    pub fn wait_for_exit(mut self) -> (i32, Vec<String>, Vec<String>) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("wait for latchkey") {
                break status;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server did not exit within {DEADLINE:?}; stderr {:#?}",
                self.stderr
            );
            let _ = self.receive(Duration::from_millis(10));
        };
        let (stdout, stderr) = self.drain();
        let code = status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal ({status}); stderr {stderr:#?}"));
        (code, stdout, stderr)
    }

    /// Once the process is gone: every line it wrote, (stdout, stderr).
    fn drain(&mut self) -> (Vec<String>, Vec<String>) {
        let started = Instant::now();
        // The readers end at EOF, which closes the channel.
        while started.elapsed() < DEADLINE {
            if let Err(mpsc::RecvTimeoutError::Disconnected) =
                self.receive(Duration::from_millis(100))
            {
                break;
            }
        }
        (
            std::mem::take(&mut self.stdout),
            std::mem::take(&mut self.stderr),
        )
    }
}

/// The lines of a `log.format = "json"` log, each parsed; panics unless
/// every line is one JSON object with a string `timestamp` (RFC 3339, UTC),
/// a `level` among latchkey's five and a string `message`.
#[track_caller]
pub fn parse_json_log(lines: &[String]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    lines
        .iter()
        .map(|line| {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}"));
            let timestamp = object.get("timestamp").and_then(|v| v.as_str());
            assert!(
                timestamp.is_some_and(|t| t.len() >= 20 && t.contains('T') && t.ends_with('Z')),
                "no RFC 3339 timestamp: {line}"
            );
            let level = object.get("level").and_then(|v| v.as_str());
            assert!(
                level.is_some_and(|l| ["error", "warn", "info", "debug", "trace"].contains(&l)),
                "no level: {line}"
            );
            assert!(
                object.get("message").is_some_and(|m| m.is_string()),
                "no message: {line}"
            );
            object
        })
        .collect()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(url) = &self.database_url {
            super::postgres::shared_cluster().drop_database(url);
        }
    }
}
