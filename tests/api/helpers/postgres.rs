//! A throwaway PostgreSQL server for the tests that run latchkey on
//! PostgreSQL: a cluster of its own in a temporary directory, on a free
//! loopback port, driven by PostgreSQL's own programs (`initdb`, `pg_ctl`,
//! `psql`), so the tests need no PostgreSQL client library.
//!
//! The programs are Debian's `postgresql` package, installed by `.ci/run`.
//! Where they are missing the test says so and passes, except under CI
//! (`CI` set), where it fails.
//!
//! `LATCHKEY_TEST_BACKEND=postgres` runs the in-process apps of the whole
//! suite (`spawn_app*`) on PostgreSQL: one cluster for the test process
//! ([`shared_cluster`]), a database of its own for each app.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::process::{execute, Run};
use super::proxies::{free_port, wait_for_port};

/// The superuser `initdb` creates, and the user every URL names.
const SUPERUSER: &str = "latchkey";

/// A running PostgreSQL cluster; stopped and deleted when dropped.
pub struct PgCluster {
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    bin: PathBuf,
    psql: PathBuf,
    /// Holds the data directory, the server's log and its socket.
    dir: tempfile::TempDir,
    port: u16,
    /// True when the tests run as root: the server refuses to, so its
    /// programs run as the `postgres` user.
    as_postgres: bool,
    /// Databases created so far, for unique names.
    databases: AtomicUsize,
}

impl PgCluster {
    /// Starts a cluster, or `None` (a failure under CI) when PostgreSQL is
    /// not installed.
    pub fn start() -> Option<PgCluster> {
        let bin = postgres_bin_dir()?;
        let psql = [bin.join("psql"), PathBuf::from("/usr/bin/psql")]
            .into_iter()
            .find(|path| path.is_file());
        let Some(psql) = psql else {
            return missing("psql");
        };
        let as_postgres = running_as_root();
        if as_postgres && execute(id(&["-u", "postgres"]), None).code != 0 {
            return missing("PostgreSQL's postgres user");
        }
        let cluster = PgCluster {
            bin,
            psql,
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            as_postgres,
            databases: AtomicUsize::new(0),
        };
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:").arg(cluster.dir.path());
            execute(chown, None).assert_ok();
        }
        let mut initdb = cluster.server_program("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"])
            // Text sorts as on a typical server, not in byte order, so that
            // a sort relying on byte order without COLLATE "C" shows (ICU,
            // PostgreSQL 15+: no operating-system locale needs installing).
            .args(["--locale=C", "--locale-provider=icu", "--icu-locale=en-US"])
            .arg("--no-sync");
        execute(initdb, None).assert_ok();
        // In the configuration file, not on pg_ctl's command line, so that a
        // restart comes back on the same port and socket.
        let settings = format!(
            "\n# The tests' own settings.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             # A throwaway cluster: durability only costs time.\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             # The whole suite at once: each app's pool and fixtures.\n\
             max_connections = 400\n",
            port = cluster.port,
            socket = cluster.dir.path().display(),
        );
        OpenOptions::new()
            .append(true)
            .open(cluster.data_dir().join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .expect("write postgresql.conf");
        cluster.start_again();
        Some(cluster)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://latchkey@127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database; returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("latchkey_test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Drops the database `url` names, ending the sessions still on it.
    pub fn drop_database(&self, url: &str) {
        let name = url.rsplit('/').next().unwrap_or_default();
        // Not `psql`: this runs from destructors, where a panic would abort.
        if let Err(e) = self.try_psql("postgres", &format!("DROP DATABASE {name} WITH (FORCE)")) {
            eprintln!("cannot drop test database {name}: {e}");
        }
    }

    /// Stops the server cleanly (`-m fast`: sessions are ended) and starts
    /// it again on the same port and data.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (`-m fast`), for tests of a lost database; clients
    /// see their connections end. [`PgCluster::start_again`] brings it back.
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "fast"]).assert_ok();
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.log_path();
        let started = self.pg_ctl(&["start", "-l", &log.display().to_string()]);
        assert_eq!(
            started.code,
            0,
            "PostgreSQL did not start: {started:#?}\nits log:\n{}",
            self.log()
        );
        wait_for_port(self.port, || {
            format!("PostgreSQL does not listen; its log:\n{}", self.log())
        });
    }

    /// Runs `sql` (any number of statements) with psql on `database`, a URL
    /// or a database name; returns what it printed (unaligned, no headers,
    /// trimmed: one line per row, columns joined by `|`). Panics on error.
    #[track_caller]
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("psql on {database} failed: {e}\nSQL: {sql}"))
    }

    /// [`PgCluster::psql`], with a failure (psql's stderr) as `Err`: for
    /// checks that the server is down.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let target = if database.starts_with("postgres://") {
            database.to_owned()
        } else {
            self.url(database)
        };
        let mut psql = Command::new(&self.psql);
        psql.args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"])
            .args(["--set", "ON_ERROR_STOP=1", "--file", "-", "--dbname"])
            .arg(target)
            .current_dir(self.dir.path());
        without_pg_variables(&mut psql);
        let run = execute(psql, Some(sql.as_bytes()));
        if run.code == 0 {
            Ok(run.stdout.trim().to_owned())
        } else {
            Err(format!("exit status {}: {}", run.code, run.stderr.trim()))
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `pg_ctl ARGS` on this cluster, waiting (at most 15 s) for it to act.
    fn pg_ctl(&self, args: &[&str]) -> Run {
        let mut pg_ctl = self.server_program("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "15"])
            .args(args);
        execute(pg_ctl, None)
    }

    /// Leaves behind a shell that waits for this process to end, however
    /// it ends, then stops the server and deletes its directory.
    // Never waited for: the shell outlives this process by design, and is
    // reaped by whoever inherits it.
    #[allow(clippy::zombie_processes)]
    fn stop_after_this_process(&self) {
        let pg_ctl = self.server_program("pg_ctl");
        let mut stop: Vec<String> = std::iter::once(pg_ctl.get_program())
            .chain(pg_ctl.get_args())
            .map(|arg| format!("'{}'", arg.to_string_lossy()))
            .collect();
        stop.push(format!(
            "-D '{}' -w -t 15 stop -m immediate",
            self.data_dir().display()
        ));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            stop = stop.join(" "),
            dir = self.dir.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog");
    }

    /// One of the server's programs, run as the user that owns the cluster.
    fn server_program(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut cmd = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // The test's own directory may be closed to the postgres user.
        cmd.current_dir(self.dir.path());
        without_pg_variables(&mut cmd);
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Not through `execute`: nothing here may panic, also not while a
        // failed test unwinds. A server already stopped makes pg_ctl fail,
        // which is fine.
        let mut stop = self.server_program("pg_ctl");
        stop.arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "15", "stop", "-m", "immediate"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = stop.status();
    }
}

/// Whether the in-process apps run on PostgreSQL: `LATCHKEY_TEST_BACKEND`
/// is `postgres` (`sqlite`, or unset, is the default).
pub fn on_postgres() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("LATCHKEY_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LATCHKEY_TEST_BACKEND={other}: expected sqlite or postgres"),
    })
}

/// The cluster the in-process apps share when [`on_postgres`]: started by
/// the first app, and stopped and deleted by a watchdog once this test
/// process is gone (a static is never dropped).
pub fn shared_cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let cluster = PgCluster::start()
            .expect("LATCHKEY_TEST_BACKEND=postgres needs PostgreSQL (apt-get install postgresql)");
        cluster.stop_after_this_process();
        cluster
    })
}

/// The directory holding `initdb` and `pg_ctl`, or `None` (a failure under
/// CI). Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin: the
/// newest major there wins.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    debian.sort();
    let elsewhere = ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from);
    let found = debian
        .into_iter()
        .rev()
        .map(|(_, bin)| bin)
        .chain(elsewhere)
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file());
    if found.is_none() {
        return missing("PostgreSQL (initdb and pg_ctl)");
    }
    found
}

/// `None` for a missing prerequisite, as `installed` does: the test passes
/// saying so, except under CI, where it fails.
fn missing<T>(what: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed; .ci/run installs it (apt-get install postgresql)"
    );
    eprintln!("skipping: {what} is not installed (apt-get install postgresql)");
    None
}

fn running_as_root() -> bool {
    execute(id(&["-u"]), None).assert_ok().stdout.trim() == "0"
}

fn id(args: &[&str]) -> Command {
    let mut id = Command::new("id");
    id.args(args);
    id
}

/// Without the libpq variables (PGHOST, PGPORT, PGUSER, ...) of whoever runs
/// the tests: every command names its server and database itself.
fn without_pg_variables(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
}

/// The PostgreSQL schema of a new database, as the backend applies it.
pub fn schema_pg() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema_pg.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
