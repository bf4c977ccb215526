//! Migrations and every `kinitro db` command against a throwaway PostgreSQL.

mod common;

use common::{fresh_database, kinitro, stderr, stdout, unused_database_url};
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use kinitro::db::{connect, migrate};

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// A completed cycle at block 12300 with weights for uids 0 and 5, and a running one at 12345.
pub const SEED_SQL: &str = r#"
INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments,
    duration_seconds, env_ids, episodes_per_env, pareto_frontier, registry_source)
VALUES (12300, 'completed', now(), 2, 1, 3911.2, '["metaworld/reach-v3"]', 50, '[0]', 'file');
INSERT INTO miner_scores (cycle_id, uid, hotkey, env_id, success_rate, mean_reward,
    episodes_completed, episodes_failed)
VALUES (1, 0, 'hk0', 'metaworld/reach-v3', 0.9, 10.0, 50, 0),
       (1, 5, 'hk5', 'metaworld/reach-v3', 0.1, 1.0, 50, 0);
INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json)
VALUES (1, 12300, '{"0": 0.75, "5": 0.25}', '{"uids": [0, 5], "values": [49151, 16383]}');
INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source)
VALUES (12345, '["metaworld/reach-v3"]', 50, 'file');
INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed)
VALUES ('550e8400-e29b-41d4-a716-446655440000', 2, 0, 'hk0', 'http://127.0.0.1:1', 'metaworld/reach-v3', 598335981, -5);
"#;

#[tokio::test]
async fn migrations_create_every_table_and_index_and_are_idempotent() {
    let url = fresh_database().await;
    assert_eq!(
        migrate::run_pending(&url).await.unwrap(),
        0,
        "second run applies nothing"
    );
    let mut conn = connect(&url).await.unwrap();
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let tables: Vec<String> = tables.into_iter().map(|t| t.name).collect();
    assert_eq!(
        tables,
        [
            "__diesel_schema_migrations",
            "computed_weights",
            "evaluation_cycles",
            "miner_scores",
            "miners",
            "scheduler_secret",
            "scheduler_state",
            "task_pool",
            "verifications"
        ]
    );
    let indexes: Vec<Name> =
        diesel::sql_query("SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'")
            .load(&mut conn)
            .await
            .unwrap();
    let indexes: Vec<String> = indexes.into_iter().map(|i| i.name).collect();
    for want in [
        "ix_evaluation_cycles_block_number",
        "idx_cycles_status",
        "one_running_cycle",
        "idx_miners_uid",
        "idx_miners_hotkey",
        "idx_task_pool_status",
        "idx_task_pool_cycle",
        "idx_task_pool_miner",
        "idx_task_pool_cycle_status",
        "idx_task_pool_pending",
        "idx_task_pool_assigned",
        "idx_miner_scores_cycle",
        "idx_miner_scores_uid",
        "idx_miner_scores_unique",
        "idx_weights_block",
        "idx_verifications_uid",
        "idx_verifications_pair",
    ] {
        assert!(indexes.iter().any(|i| i == want), "missing index {want}");
    }
}

#[tokio::test]
async fn constraints_hold() {
    let url = fresh_database().await;
    let mut conn = connect(&url).await.unwrap();
    let running =
        "INSERT INTO evaluation_cycles (block_number, episodes_per_env, registry_source) \
                   VALUES (1, 50, 'chain')";
    conn.batch_execute(running).await.unwrap();
    assert!(
        conn.batch_execute(running).await.is_err(),
        "a second running cycle must be refused"
    );
    assert!(conn
        .batch_execute("UPDATE evaluation_cycles SET status = 'bogus'")
        .await
        .is_err());
    assert!(conn
        .batch_execute(
            "INSERT INTO scheduler_state (id, chain_ok, registry_source, env_ids, \
             eval_interval_seconds, heartbeat_interval_seconds, heartbeat_at) \
             VALUES (2, true, 'file', '[]', 1, 1, now())"
        )
        .await
        .is_err());
    conn.batch_execute("DELETE FROM evaluation_cycles")
        .await
        .unwrap();
}

#[tokio::test]
async fn every_db_command_on_a_throwaway_server() {
    let url = unused_database_url();
    let u = url.as_str();
    let name = url.database();

    let o = kinitro(&["db", "create", "--database-url", u], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("created {name}"));
    let o = kinitro(&["db", "create", "--database-url", u], &[]);
    assert_eq!(stdout(&o).trim(), format!("database {name} already exists"));

    // The guide's asyncpg form is accepted; init is idempotent.
    let asyncpg = u.replace("postgresql://", "postgresql+asyncpg://");
    let o = kinitro(&["db", "init", "--database-url", &asyncpg], &[]);
    assert!(
        stdout(&o).starts_with("applied 2 migration(s)"),
        "{}",
        stdout(&o)
    );
    let o = kinitro(&["db", "init"], &[("KINITRO_DATABASE_URL", u)]);
    assert!(
        stdout(&o).starts_with("applied 0 migration(s)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    let mut conn = connect(&url).await.unwrap();
    conn.batch_execute(SEED_SQL).await.unwrap();
    let o = kinitro(&["db", "status", "--database-url", u], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "cycles: 2 (completed 1, running 1)",
        "miners evaluated: 2",
        "tasks: 1 (pending 1)",
        "latest completed cycle: id 1 block 12300",
        "duration 3911.2s miners 2",
        "running cycle: id 2 block 12345 tasks 1 (pending 1)",
        "latest weights: block 12300 miners 2",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // Without --force and without a terminal, reset and drop refuse with exit 2.
    let o = kinitro(&["db", "reset", "--database-url", u], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("refusing to reset without --force"));
    let o = kinitro(&["db", "drop", "--database-url", u], &[]);
    assert_eq!(o.status.code(), Some(2));

    // reset keeps the database, empties the tables, re-applies the schema; other objects survive.
    conn.batch_execute("CREATE TABLE operator_notes (x int)")
        .await
        .unwrap();
    drop(conn);
    let o = kinitro(&["db", "reset", "--force", "--database-url", u], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut conn = connect(&url).await.unwrap();
    let c: Count = diesel::sql_query("SELECT count(*) AS count FROM evaluation_cycles")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(c.count, 0);
    conn.batch_execute("SELECT * FROM operator_notes")
        .await
        .unwrap();

    // drop terminates our open connection and removes the database.
    let o = kinitro(&["db", "drop", "-f", "--database-url", u], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("dropped {name}"));
    let o = kinitro(&["db", "status", "--database-url", u], &[]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn unreachable_database_is_one_clear_line() {
    let port = common::free_port();
    let u = format!("postgresql://k:secretpw@127.0.0.1:{port}/kinitro");
    for cmd in ["status", "init", "create"] {
        let o = kinitro(&["db", cmd, "--database-url", &u], &[]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "error: cannot connect to PostgreSQL at 127.0.0.1:{port}: "
            )),
            "{err}"
        );
        assert!(!err.contains("secretpw"));
    }
    let o = kinitro(&["db", "status", "--database-url", "mysql://x/y"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid database URL: expected postgresql://"));
    let o = kinitro(
        &["db", "status", "--database-url", &u, "--data-dir", "/tmp"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "both targets is a usage error");
}
