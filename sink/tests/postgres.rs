//! The PostgreSQL target against the real PostgreSQL `scripts/test.sh` starts
//! (`PITGUN_TEST_POSTGRES`), each test in a database of its own. A write commits its rows; a
//! later version of a row and a re-delivered batch replace rows instead of doubling them; a row
//! PostgreSQL refuses comes back with the server's error code while the rest is written; a
//! session the server dropped is replaced (after one `Retry` at most); a server failure gives
//! `Retry`.

#[path = "support/rows.rs"]
mod rows;

use pitgun_sink::postgres::{PgTarget, UPSERTS_AFTER_A_CONFLICT};
use pitgun_sink::table::TableShape;
use pitgun_sink::target::{Target, WriteError};
use rows::*;
use tokio_postgres::{Client, NoTls};

const TABLE: &str = "lap_performance_v1";

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh database of the test's own; its URL.
async fn own_database(name: &str) -> String {
    let admin_url = std::env::var("PITGUN_TEST_POSTGRES").expect(
        "PITGUN_TEST_POSTGRES is not set: run the tests through scripts/test.sh, which starts PostgreSQL \
         (or scripts/stack.sh up and export PITGUN_TEST_POSTGRES=postgres://pitgun:pitgun@127.0.0.1:54329/pitgun)",
    );
    let admin = connect(&admin_url).await;
    let db = format!("t_sink_{name}_{}", std::process::id());
    // Two statements: neither may run inside the implicit transaction of a multi-statement batch.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{db}")
}

async fn open(url: &str, connections: usize) -> (PgTarget, TableShape) {
    let shape = TableShape::from_contract(&lap_contract(), TABLE).unwrap();
    (PgTarget::open(url, vec![(shape.clone(), "lap-performance".into(), 1)], connections).await.expect("open"), shape)
}

/// `(row_id, samples)` of every row in the table, by row id.
async fn table(client: &Client) -> Vec<(String, i64)> {
    let rows = client.query(&format!("SELECT row_id, samples FROM {TABLE} ORDER BY row_id"), &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn expected(rows: &[Row]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = rows.iter().map(|r| (r["row_id"].as_str().unwrap().to_string(), r["samples"].as_i64().unwrap())).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_replace_versions_and_a_refused_row_comes_back_with_the_rest_written() {
    let url = own_database("upsert").await;
    let (mut target, shape) = open(&url, 2).await;
    assert_eq!(target.kind(), "postgres");
    let client = connect(&url).await;
    let rows = lap_rows();
    let refused = target.write(0, &mut convert(&shape, &rows)).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(table(&client).await, expected(&rows), "after the first write");

    // A later version of row 0, and a row PostgreSQL refuses (a NUL in a text value).
    let mut want = rows.clone();
    want[0] = next_version(&rows[0]);
    let mut bad = rows[1].clone();
    bad.insert("row_id".into(), "refused".into());
    bad.insert("player".into(), "nul\u{0}player".into());
    let mut batch = convert(&shape, &[want[0].clone(), bad]);
    let refused = target.write(0, &mut batch).await.expect("write");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 1, "the refused row's index in the batch");
    assert!(refused[0].1.contains("22021"), "PostgreSQL's error code: {}", refused[0].1);
    assert_eq!(table(&client).await, expected(&want), "the later version replaced row 0");

    // The whole batch again, as after a crash before the offset commit: nothing doubles.
    let refused = target.write(0, &mut convert(&shape, &want)).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(table(&client).await, expected(&want), "after the re-delivered batch");
}

/// A batch none of whose keys is in the table is copied straight in; one that meets a key
/// already there is upserted (an older version still does not replace a newer one), and so are
/// the table's next batches, counted in batches whatever the number of connections, until a
/// direct copy is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rows_are_copied_straight_in_and_a_batch_meeting_a_known_key_is_upserted() {
    let url = own_database("direct").await;
    let (mut target, shape) = open(&url, 2).await;
    let client = connect(&url).await;
    let rows = lap_rows();
    let write = |rows: Vec<pitgun_sink::table::TableRow>, version: i64| {
        rows.into_iter()
            .map(|mut r| {
                r.version = version;
                r
            })
            .collect::<Vec<_>>()
    };
    let refused = target.write(0, &mut write(convert(&shape, &rows[..4]), 10)).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(target.write_paths(0), (1, 0), "four new rows: copied straight in");
    assert_eq!(table(&client).await, expected(&rows[..4]));

    // An older version of row 0 (a sample more, version 5 < 10) with four new rows: the copy
    // meets row 0's key, so the whole batch is upserted; row 0 keeps its newer version.
    let mut batch = vec![next_version(&rows[0])];
    batch.extend_from_slice(&rows[4..]);
    let refused = target.write(0, &mut write(convert(&shape, &batch), 5)).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(target.write_paths(0), (1, 1), "the batch meeting a known key was upserted");
    assert_eq!(table(&client).await, expected(&rows), "all rows there, row 0 at its newer version");

    // The next batches of new rows are upserted, then a direct copy is tried again.
    let fresh = |k: usize| {
        let mut r = rows[0].clone();
        r.insert("row_id".into(), format!("fresh-{k}").into());
        r
    };
    for k in 0..UPSERTS_AFTER_A_CONFLICT as usize + 1 {
        let refused = target.write(0, &mut write(convert(&shape, &[fresh(k)]), 1)).await.expect("write");
        assert!(refused.is_empty(), "{refused:?}");
    }
    assert_eq!(target.write_paths(0), (2, 1 + u64::from(UPSERTS_AFTER_A_CONFLICT)));
    let count: i64 = client.query_one(&format!("SELECT count(*) FROM {TABLE}"), &[]).await.unwrap().get(0);
    assert_eq!(count as usize, rows.len() + UPSERTS_AFTER_A_CONFLICT as usize + 1);
}

/// A registered table whose unique key was dropped since is never copied into directly, where a
/// known key would double: it is upserted, which PostgreSQL refuses without the key, so the
/// write is `Retry` and nothing is written. (An unregistered one is refused at start.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_its_unique_key_is_never_copied_into_directly() {
    let url = own_database("nokey").await;
    let shape = TableShape::from_contract(&lap_contract(), TABLE).unwrap();
    drop(PgTarget::open(&url, vec![(shape.clone(), "lap-performance".into(), 1)], 1).await.expect("registered"));
    let client = connect(&url).await;
    client.batch_execute(&format!("ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_pkey")).await.unwrap();
    let mut target = PgTarget::open(&url, vec![(shape.clone(), "lap-performance".into(), 1)], 1).await.expect("open");
    match target.write(0, &mut convert(&shape, &lap_rows())).await {
        Err(WriteError::Retry(e)) => assert!(e.contains("ON CONFLICT"), "PostgreSQL's reason: {e}"),
        other => panic!("the upsert fails without a unique key, not {other:?}"),
    }
    assert_eq!(target.write_paths(0), (0, 0), "no batch was written by either path");
    assert_eq!(table(&client).await, vec![], "nothing written");
}

/// A table no sink registered (made by hand, restored from a dump without the registry) is
/// checked against the contract like a registered one: of another shape it is refused at start,
/// naming what differs (before, a column of another type sent every row to the dead letters and
/// a missing key retried forever); of this shape it is taken on and written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_table_of_another_shape_is_refused_at_start_and_one_of_this_shape_taken_on() {
    let shape = TableShape::from_contract(&lap_contract(), TABLE).unwrap();
    let ddl = shape.create_sql();
    let changed = |from: &str, to: &str| {
        assert!(ddl.contains(from), "{from} in {ddl}");
        ddl.replacen(from, to, 1)
    };
    let no_key = TableShape { primary_key: Vec::new(), ..shape.clone() }.create_sql();
    let cases = [
        ("wrongtype", changed("\"samples\" bigint", "\"samples\" integer"), "column \"samples\" is integer, not bigint"),
        ("nullable", changed("\"samples\" bigint NOT NULL", "\"samples\" bigint"), "column \"samples\" may be NULL"),
        ("missing", changed("\"samples\" bigint NOT NULL, ", ""), "no column \"samples\""),
        ("extra", changed(" (", " (\"note\" text NOT NULL, "), "column \"note\" is NOT NULL without a default"),
        ("nokey", no_key, "no primary key or unique index on (session_id, row_id)"),
    ];
    for (name, ddl, says) in cases {
        let url = own_database(&format!("unregistered_{name}")).await;
        connect(&url).await.batch_execute(&ddl).await.unwrap();
        match PgTarget::open(&url, vec![(shape.clone(), "lap-performance".into(), 1)], 1).await {
            Ok(_) => panic!("{name}: a table of another shape was taken on: {ddl}"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(TABLE) && e.contains(says), "{name}: {e}");
            }
        }
    }

    // This shape, with columns of its own the sink need not fill (a default, an identity), and
    // its key declared the other way round: taken on, written, and a later version of a row
    // upserted (through the staging table, which must not demand those columns).
    let url = own_database("unregistered_same").await;
    let client = connect(&url).await;
    let own_columns = changed(" (", " (\"note\" text NOT NULL DEFAULT 'hand-made', \"id\" bigint GENERATED ALWAYS AS IDENTITY, ");
    client
        .batch_execute(&own_columns.replacen("PRIMARY KEY (\"session_id\", \"row_id\")", "PRIMARY KEY (\"row_id\", \"session_id\")", 1))
        .await
        .unwrap();
    let mut target = PgTarget::open(&url, vec![(shape.clone(), "lap-performance".into(), 1)], 1).await.expect("this shape is taken on");
    let mut rows = lap_rows();
    assert!(target.write(0, &mut convert(&shape, &rows)).await.expect("write").is_empty());
    rows[0] = next_version(&rows[0]);
    let mut later = convert(&shape, &rows[..1]);
    later[0].version = 1;
    assert!(target.write(0, &mut later).await.expect("write").is_empty(), "a later version is upserted");
    assert_eq!(target.write_paths(0).1, 1, "through the upsert");
    assert_eq!(table(&client).await, expected(&rows));
    let registered: i64 = client.query_one("SELECT count(*) FROM pitgun_sink_tables WHERE table_name = $1", &[&TABLE]).await.unwrap().get(0);
    assert_eq!(registered, 1, "registered once taken on");
}

/// The definitions of the table's indexes, by name.
async fn indexes(client: &Client) -> Vec<(String, String)> {
    let sql = "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 ORDER BY 1";
    client.query(sql, &[&TABLE]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// A new table is keyed by `(session_id, row_id)`, its one index; a table an earlier sink keyed
/// by `row_id` alone (with a `session_id` index) keeps that key, and both write paths work on it:
/// the direct copy of new rows, and the upsert that keeps a row's newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_is_keyed_by_session_and_row_and_an_earlier_sinks_table_keeps_its_key() {
    let url = own_database("newkey").await;
    let (_target, _) = open(&url, 1).await;
    let client = connect(&url).await;
    let have = indexes(&client).await;
    assert_eq!(have.len(), 1, "one index: {have:?}");
    assert!(have[0].1.ends_with("USING btree (session_id, row_id)"), "{have:?}");

    let url = own_database("earlierkey").await;
    let shape = TableShape::from_contract(&lap_contract(), TABLE).unwrap();
    let earlier = shape.with_earlier_key().expect("the lap table had a row_id key before");
    drop(PgTarget::open(&url, vec![(earlier, "lap-performance".into(), 1)], 1).await.expect("an earlier sink's table"));
    let mut target = PgTarget::open(&url, vec![(shape.clone(), "lap-performance".into(), 1)], 2).await.expect("the table is accepted");
    let client = connect(&url).await;
    let have = indexes(&client).await;
    assert_eq!(have.len(), 2, "{have:?}");
    assert!(have[0].1.ends_with("USING btree (row_id)") && have[1].1.ends_with("USING btree (session_id)"), "{have:?}");
    let rows = lap_rows();
    let with_version = |rows: Vec<pitgun_sink::table::TableRow>, version: i64| {
        rows.into_iter().map(|r| pitgun_sink::table::TableRow { version, ..r }).collect::<Vec<_>>()
    };
    assert!(target.write(0, &mut with_version(convert(&shape, &rows), 10)).await.expect("write").is_empty());
    assert_eq!(target.write_paths(0), (1, 0), "new rows: copied straight in");
    let mut older = with_version(convert(&shape, &[next_version(&rows[0])]), 5);
    assert!(target.write(0, &mut older).await.expect("write").is_empty());
    assert_eq!(target.write_paths(0), (1, 1), "a known key: upserted on the row_id key");
    assert_eq!(table(&client).await, expected(&rows), "row 0 kept its newer version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_is_replaced_and_a_server_failure_is_retry() {
    let url = own_database("dropped").await;
    let (mut target, shape) = open(&url, 1).await;
    let client = connect(&url).await;
    let rows = lap_rows();
    let db = url.rsplit_once('/').unwrap().1;
    let killed = client
        .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", &[&db])
        .await
        .unwrap();
    assert!(killed.get::<_, i64>(0) >= 1, "the target's session was terminated");
    // The target sees the session gone before the write (it reconnects first) or during it
    // (`Retry`), depending on when the server's notice reaches the client; one retry at most.
    let mut batch = convert(&shape, &rows);
    let refused = match target.write(0, &mut batch).await {
        Ok(refused) => refused,
        // The client may read the server's notice, or only see the connection closed.
        Err(WriteError::Retry(_)) => target.write(0, &mut batch).await.expect("the retried write lands on a new session"),
    };
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(table(&client).await, expected(&rows));

    // A failure that is not the rows' fault (here: the table is gone) is Retry, not a refusal:
    // the rows wait in Kafka instead of going to the dead-letter topic.
    client.batch_execute(&format!("DROP TABLE {TABLE}")).await.unwrap();
    match target.write(0, &mut convert(&shape, &rows)).await {
        Err(WriteError::Retry(e)) => assert!(format!("{e:#}").contains(TABLE), "the error names the table: {e:#}"),
        other => panic!("a missing table is Retry, not {other:?}"),
    }
}

/// A session with two summary rows (a driver change: another key, another `row_id`) has one
/// run, and which one does not depend on the order its rows and their versions arrive in: the
/// documented rule (`pitgun_contracts::runs::RUNS_PREFERRED_BY`) picks the row with the most
/// events, at its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_keeps_one_row_per_session_whatever_the_arrival_order() {
    let contract: pitgun_contracts::analysis::AnalysisContract =
        serde_json::from_str(&std::fs::read_to_string(root().join("manifests/pipelines/session-summary.v1.contract.json")).unwrap()).unwrap();
    let shape = pitgun_sink::runs_table::runs_shape(&contract, "runs").unwrap();
    let summary = |row_id: &str, player: &str, events: i64| -> Row {
        serde_json::from_value(serde_json::json!({
            "row_id": row_id, "session_id": "s-7", "player": player, "track": "monza", "car": "gt3",
            "window_start": "2026-01-01T00:00:00.000000Z", "window_end": "2026-01-01T00:10:00.000000Z",
            "laps": events / 100, "best_lap": 97.5, "top_speed": 301.0, "distance": 12.5, "events": events, "missing_events": 0
        }))
        .unwrap()
    };
    // Ana drove first, Bo took over; Ana's row at two versions (input offsets 10 and 30), Bo's
    // at one (20). Ana's older version read last must not bring her 300 events back.
    let (ana1, bo, ana2) = ((summary("r-ana", "ana", 300), 10), (summary("r-bo", "bo", 320), 20), (summary("r-ana", "ana", 400), 30));
    let orders: [(&str, Vec<&(Row, i64)>); 5] = [
        ("ana bo ana", vec![&ana1, &bo, &ana2]),
        ("bo ana ana", vec![&bo, &ana1, &ana2]),
        ("ana ana bo", vec![&ana1, &ana2, &bo]),
        ("ana2 bo ana1", vec![&ana2, &bo, &ana1]),
        ("ana bo", vec![&ana1, &bo]),
    ];
    for (n, (what, order)) in orders.iter().enumerate() {
        let url = own_database(&format!("runs{n}")).await;
        let mut target = PgTarget::open(&url, vec![(shape.clone(), "session-summary".into(), 1)], 1).await.expect("open");
        for (row, version) in order {
            let mut rows = convert(&shape, std::slice::from_ref(row));
            rows[0].version = *version;
            let refused = target.write(0, &mut rows).await.expect("write");
            assert!(refused.is_empty(), "{what}: {refused:?}");
        }
        let client = connect(&url).await;
        let got = client.query("SELECT session_id, player, events FROM runs", &[]).await.unwrap();
        let got: Vec<(String, String, i64)> = got.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        // Ana's last version has the most events, unless it never came: then Bo's 320 beat her 300.
        let want = if order.len() == 3 { ("s-7", "ana", 400) } else { ("s-7", "bo", 320) };
        assert_eq!(got, vec![(want.0.to_string(), want.1.to_string(), want.2)], "arrival order {what}");
    }
}

/// Two versions of a manifest never write one table: the `runs` of session-summary v1 and v2
/// would mix, each session showing one version or the other (the runs rule picks by events, not
/// by version). A second version is refused at start, naming the table's version; its own runs
/// table (`runs_v2`) has the runs mapping too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_manifest_version_is_refused_a_table_the_first_holds() {
    let contract: pitgun_contracts::analysis::AnalysisContract =
        serde_json::from_str(&std::fs::read_to_string(root().join("manifests/pipelines/session-summary.v1.contract.json")).unwrap()).unwrap();
    let runs = pitgun_sink::runs_table::runs_shape(&contract, "runs").unwrap();
    let url = own_database("runs_versions").await;
    drop(PgTarget::open(&url, vec![(runs.clone(), "session-summary".into(), 1)], 1).await.expect("v1's runs"));
    match PgTarget::open(&url, vec![(runs.clone(), "session-summary".into(), 2)], 1).await {
        Ok(_) => panic!("v2 was let write v1's runs table"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("\"runs\"") && e.contains("session-summary v1") && e.contains("runs_v2"), "{e}");
        }
    }
    let runs_v2 = pitgun_sink::runs_table::runs_shape(&contract, "runs_v2").unwrap();
    assert_eq!((runs_v2.table.as_str(), &runs_v2.columns), ("runs_v2", &runs.columns), "the runs mapping under another name");
    drop(PgTarget::open(&url, vec![(runs, "session-summary".into(), 1), (runs_v2, "session-summary".into(), 2)], 1).await.expect("each its own"));
}
