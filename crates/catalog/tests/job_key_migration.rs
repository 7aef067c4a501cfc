//! Migration 0006 rebuilds SQLite's `jobs` to drop the uniqueness of
//! `update_id`, and with it the tables that reference jobs (dropping
//! `jobs` would otherwise cascade into them). Rows recorded before it must
//! come through whole, still tied together.

use sqlx::{Connection, SqliteConnection};
use std::path::Path;
use teledrop_catalog::Transition;
use teledrop_core::{ChatId, IncomingFile, JobId, JobState, MediaKind, MessageId, UpdateId, UserId};

const BEFORE_REKEYING: i64 = 5;

#[tokio::test]
async fn sqlite_jobs_events_and_rate_slots_survive_the_rekeying() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/c.db?mode=rwc", dir.path().display());
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let migrator = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    migrator.run_to(BEFORE_REKEYING, &mut conn).await.unwrap();

    let incoming = IncomingFile {
        user_id: UserId(3),
        chat_id: ChatId(30),
        message_id: MessageId(12),
        kind: MediaKind::Document,
        telegram_file_id: "BQACAgIold".into(),
        file_unique_id: "AgADold".into(),
        size: Some(10),
        file_name: "old.bin".into(),
        mime_type: "application/octet-stream".into(),
    };
    let job = JobId::new();
    let job_text = job.as_uuid().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, update_id, user_id, chat_id, message_id, incoming, state, attempts, \
                           created_at, updated_at) VALUES (?1, 41, 3, 30, 12, ?2, 'running', 1, 1000, 2000)",
    )
    .bind(&job_text)
    .bind(serde_json::to_string(&incoming).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    for (at, from, to) in [(1000, None, "pending"), (2000, Some("pending"), "running")] {
        sqlx::query("INSERT INTO job_events (job_id, at, from_state, to_state, note) VALUES (?1, ?2, ?3, ?4, 'x')")
            .bind(&job_text)
            .bind(at)
            .bind(from)
            .bind(to)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO rate_admissions (job_id, user_id, at) VALUES (?1, 3, 1500)")
        .bind(&job_text)
        .execute(&mut conn)
        .await
        .unwrap();

    let catalog = teledrop_catalog::connect(&url).await.unwrap();
    catalog.migrate().await.unwrap();

    let record = catalog.job(job).await.unwrap().expect("the job survived");
    assert_eq!(
        (record.update_id, &record.incoming, record.state, record.attempts),
        (UpdateId(41), &incoming, JobState::Running, 1)
    );
    let events = catalog.job_events(job).await.unwrap();
    let states: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        states,
        [(None, JobState::Pending), (Some(JobState::Pending), JobState::Running)]
    );
    let slots: (i64, i64) = sqlx::query_as("SELECT COUNT(*), MAX(at) FROM rate_admissions WHERE job_id = ?1")
        .bind(&job_text)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(slots, (1, 1500));

    // The children point at the new `jobs`, and nothing dangles.
    for child in ["job_events", "rate_admissions"] {
        let parents: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_list(?1)")
            .bind(child)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(parents, [("jobs".to_owned(),)], "{child}");
    }
    let dangling: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(dangling.is_empty(), "{dangling:?}");

    // The event sequence goes on after the copied rows, and the job moves on.
    catalog
        .transition(job, Transition::new(JobState::Running, JobState::Failed, "after"))
        .await
        .unwrap();
    let events = catalog.job_events(job).await.unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
}
