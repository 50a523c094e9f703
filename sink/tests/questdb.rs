//! The QuestDB target against the in-process stand-in beside these tests
//! (`support/questdb_standin.rs`; **a mock** of QuestDB's documented HTTP contract — no QuestDB
//! server can be installed where these tests run). The ILP lines for the golden rows match a
//! golden file; a later version of a row replaces it through the table's dedup keys; a row
//! QuestDB refuses comes back with QuestDB's message while the rest is written; a server that is
//! unavailable, fails, or loses its answer after applying a write gives `Retry`, and the retried
//! writes leave every row once.

#[path = "support/questdb_standin.rs"]
mod questdb_standin;
#[path = "support/rows.rs"]
mod rows;

use std::path::PathBuf;
use std::time::Duration;

use pitgun_sink::questdb::{QuestTable, QuestTarget};
use pitgun_sink::target::{Target, WriteError};
use questdb_standin::{Fault, QuestDbStandIn};
use rows::*;

const TABLE: &str = "lap_performance_v1";

async fn open(q: &QuestDbStandIn) -> (QuestTarget, QuestTable) {
    let table = QuestTable::from_contract(&lap_contract(), TABLE).unwrap();
    (QuestTarget::open(&q.conf(), vec![table.clone()]).await.expect("open"), table)
}

/// The stand-in's table equals `want`, row by row and column by column.
fn assert_table_equals(q: &QuestDbStandIn, want: &[Row], what: &str) {
    let table = q.rows(TABLE);
    assert_eq!(table.len(), want.len(), "{what}: rows in the table");
    for w in want {
        let id = &w["row_id"];
        let got = table.iter().find(|r| &r["row_id"] == id).unwrap_or_else(|| panic!("{what}: row {id} missing"));
        for (col, v) in w {
            let g = &got[col];
            let same = match (g.as_f64(), v.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => g == v,
            };
            assert!(same, "{what}: row {id}, column {col}: QuestDB {g}, replay {v}");
        }
    }
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/questdb-lap-performance.ilp")
}

#[tokio::test]
async fn ilp_lines_match_the_golden_file_and_a_later_version_replaces_its_row() {
    let q = QuestDbStandIn::start();
    let (mut target, table) = open(&q).await;
    assert_eq!(target.kind(), "questdb");
    let rows = lap_rows();
    let refused = target.write(0, &mut convert(&table.shape, &rows)).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_table_equals(&q, &rows, "after the first write");

    let mut lines = q.accepted_lines();
    lines.sort();
    let got = lines.join("\n") + "\n";
    if std::env::var_os("PITGUN_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path(), &got).unwrap();
    }
    let want = std::fs::read_to_string(golden_path()).expect("golden file (PITGUN_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(got, want, "ILP lines differ from {}", golden_path().display());

    // The processor re-emits lap 1 with one more sample: same designated timestamp and keys.
    let mut want = rows.clone();
    want[0] = next_version(&rows[0]);
    let refused = target.write(0, &mut convert(&table.shape, &want[..1])).await.expect("write");
    assert!(refused.is_empty(), "{refused:?}");
    assert_table_equals(&q, &want, "after the later version");
}

#[tokio::test]
async fn a_refused_row_comes_back_with_questdbs_message_and_the_rest_is_written() {
    let q = QuestDbStandIn::start();
    q.refuse_symbol("refuse-me");
    let (mut target, table) = open(&q).await;
    let rows = lap_rows();
    let mut bad = rows[0].clone();
    bad.insert("row_id".into(), "refused-by-questdb".into());
    bad.insert("player".into(), "refuse-me".into());
    let mut batch = rows.clone();
    batch.insert(2, bad);
    let mut table_rows = convert(&table.shape, &batch);
    let refused = target.write(0, &mut table_rows).await.expect("write");
    assert_eq!(table_rows.len(), batch.len(), "the rows come back from the write");
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (at, message) = &refused[0];
    assert_eq!(*at, 2, "the refused row's index in the batch");
    assert!(message.contains("refused by the test") && message.contains("code: invalid") && message.contains("line: "), "{message}");
    assert_table_equals(&q, &rows, "the rest of the batch");
}

#[tokio::test]
async fn unavailable_failing_and_lost_answers_are_retry_and_every_row_lands_once() {
    let q = QuestDbStandIn::start();
    let (mut target, table) = open(&q).await;
    let rows = lap_rows();
    let mut batch = convert(&table.shape, &rows);

    q.unavailable_for(Duration::from_secs(60));
    assert!(matches!(target.write(0, &mut batch).await, Err(WriteError::Retry(_))), "503 is Retry");
    q.unavailable_for(Duration::ZERO);
    q.push_fault(Fault::Status(500));
    assert!(matches!(target.write(0, &mut batch).await, Err(WriteError::Retry(_))), "500 is Retry");
    q.push_fault(Fault::ApplyThenDrop);
    assert!(matches!(target.write(0, &mut batch).await, Err(WriteError::Retry(_))), "a lost answer is Retry");
    assert_eq!(q.rows(TABLE).len(), rows.len(), "the request whose answer was lost was applied");
    let refused = target.write(0, &mut batch).await.expect("the retried write");
    assert!(refused.is_empty(), "{refused:?}");

    let (writes, applied, errors) = q.counts();
    assert_eq!((writes, applied), (4, 2), "four requests, two applied; errors {errors:?}");
    assert_eq!((errors.get(&503), errors.get(&500)), (Some(&1), Some(&1)), "{errors:?}");
    // Applied twice, deduplicated on the designated timestamp and keys: one row each.
    assert_table_equals(&q, &rows, "after the retries");
}

/// A write given up (the sink is stopping, `--drain-timeout` passed) is dropped while its request
/// is under way on a blocking thread, which dropping does not stop. `abandon` waits for that
/// request: once it returns, nothing of the write can land after the partitions' next owner
/// writes the same rows (QuestDB keeps whichever lands last). The target then writes again.
#[tokio::test]
async fn a_write_given_up_is_waited_for_before_abandon_returns() {
    let q = QuestDbStandIn::start();
    let (mut target, table) = open(&q).await;
    let rows = lap_rows();
    let mut batch = convert(&table.shape, &rows);
    q.push_fault(Fault::Slow(Duration::from_millis(1500)));
    let dropped = tokio::time::timeout(Duration::from_millis(300), target.write(0, &mut batch)).await;
    assert!(dropped.is_err(), "the slow write was still under way when dropped");
    assert!(q.rows(TABLE).is_empty(), "not applied yet");
    let started = std::time::Instant::now();
    target.abandon().await;
    assert!(started.elapsed() >= Duration::from_millis(900), "abandon returned before the request ended ({:?})", started.elapsed());
    assert_eq!(q.rows(TABLE).len(), rows.len(), "the request under way had landed when abandon returned");
    let mut again = convert(&table.shape, &rows);
    assert!(target.write(0, &mut again).await.expect("a write after one given up").is_empty());
    assert_table_equals(&q, &rows, "after the write given up and the next");
}

/// A write given up sends no further request: here QuestDB refuses a row of the slow request
/// under way, and the resend without that row, which a write not given up makes, stays unsent.
#[tokio::test]
async fn a_write_given_up_sends_no_further_request() {
    let q = QuestDbStandIn::start();
    q.refuse_symbol("refuse-me");
    let (mut target, table) = open(&q).await;
    let mut rows = lap_rows();
    rows[0].insert("player".into(), "refuse-me".into());
    let mut batch = convert(&table.shape, &rows);
    q.push_fault(Fault::Slow(Duration::from_millis(1000)));
    let dropped = tokio::time::timeout(Duration::from_millis(300), target.write(0, &mut batch)).await;
    assert!(dropped.is_err(), "the slow write was still under way when dropped");
    target.abandon().await;
    let (writes, applied, errors) = q.counts();
    assert_eq!((writes, applied), (1, 0), "the refused request alone, no resend; errors {errors:?}");
    assert!(q.rows(TABLE).is_empty());
}
