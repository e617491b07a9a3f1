//! The PostgreSQL harness itself (`helpers::postgres`): a throwaway cluster
//! hands out separate databases, takes `schema_pg.sql` whole, and answers
//! again after a restart and after a stop and start.
//!
//! PostgreSQL is Debian's `postgresql`, installed by `.ci/run`. Where it is
//! missing the test says so and passes, except under CI (`CI` set).

use crate::helpers::*;
use latchkey::store::db::Engine;

const USERS_EXISTS: &str =
    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'users'";

#[test]
fn a_throwaway_cluster_takes_the_schema_and_survives_a_restart() {
    let Some(pg) = PgCluster::start() else {
        return;
    };
    let first = pg.create_database();
    let second = pg.create_database();
    assert_ne!(first, second);
    assert!(
        first.starts_with(&format!("postgres://latchkey@127.0.0.1:{}/", pg.port())),
        "{first}"
    );

    // In one transaction, as the backend applies it.
    pg.psql(&first, &format!("BEGIN;\n{}\nCOMMIT;", schema_pg()));
    assert_eq!(pg.psql(&first, USERS_EXISTS), "1");
    assert_eq!(
        pg.psql(&first, "SELECT id, last_id FROM session_counter"),
        "1|0"
    );
    // The cluster sorts text as people read it: byte order only where the
    // schema asks for it.
    let sorted = "SELECT string_agg(x, ',' ORDER BY x) FROM (VALUES ('b'), ('B'), ('a')) AS v (x)";
    assert_eq!(pg.psql(&first, sorted), "a,b,B");
    // Databases are separate; a name works as well as a URL.
    assert_eq!(pg.psql(&second, USERS_EXISTS), "0");
    let name = second.rsplit('/').next().expect("a database name");
    assert_eq!(pg.psql(name, "SELECT current_database()"), name);

    pg.restart();
    assert_eq!(pg.psql(&first, USERS_EXISTS), "1");

    pg.stop();
    let down = pg.try_psql(&first, "SELECT 1");
    assert!(down.is_err(), "a stopped server answered: {down:?}");
    pg.start_again();
    assert_eq!(pg.psql(&first, "SELECT count(*) FROM users"), "0");
}

/// The second pass of the suite (`LATCHKEY_TEST_BACKEND=postgres`) must
/// really run on PostgreSQL: were the switch ignored, every contract test
/// would pass again on SQLite and prove nothing about the other engine.
#[tokio::test]
async fn the_suite_runs_on_the_backend_it_was_asked_for() {
    let app = spawn_app().await;
    let expected = if on_postgres() {
        Engine::Postgres
    } else {
        Engine::Sqlite
    };
    assert_eq!(app.engine(), expected);
    // And the server itself, not only the test's connection, stores there:
    // a login made over HTTP is a row the engine's own connection reads.
    app.add_user("harness", "a long enough password");
    app.login_token("harness", "a long enough password").await;
    assert_eq!(
        app.scalar::<i64>("SELECT count(*) FROM sessions", &[]),
        1,
        "the login did not reach the {expected:?} database"
    );
}
