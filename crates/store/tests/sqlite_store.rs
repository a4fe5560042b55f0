//! `SqliteStore` against real database files in temporary directories.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_store::{
    AuditRecord, AuditRecordId, DATABASE_FILE_NAME, SCHEMA_VERSION, SqliteSettings, SqliteStore,
    Store, StoreError,
};

fn audit(target: &str, before: &str, after: &str, time_ms: i64) -> AuditRecord {
    AuditRecord {
        time_ms,
        request_id: format!("REQUEST-{time_ms}"),
        account_id: "1000000000000001".to_owned(),
        principal: "ram-user:ops".to_owned(),
        access_key_id: "LTAIexample".to_owned(),
        source_ip: Some("127.0.0.1".to_owned()),
        action: if after == "global_access=off" {
            "DisasterDowngrade".to_owned()
        } else {
            "DisasterRecovery".to_owned()
        },
        group_id: "global".to_owned(),
        instance_id: "mqtt-cn-hz01".to_owned(),
        target_instance_id: target.to_owned(),
        before: before.to_owned(),
        after: after.to_owned(),
        note: None,
    }
}

fn downgrade(target: &str, time_ms: i64) -> AuditRecord {
    audit(target, "global_access=on", "global_access=off", time_ms)
}

fn recovery(target: &str, time_ms: i64) -> AuditRecord {
    audit(target, "global_access=off", "global_access=on", time_ms)
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, SqliteSettings::default()).unwrap()
}

fn open_with_timeout(dir: &Path, busy_timeout: Duration) -> SqliteStore {
    SqliteStore::open(dir, SqliteSettings { busy_timeout }).unwrap()
}

fn records(store: &SqliteStore) -> Vec<(AuditRecordId, AuditRecord)> {
    store.audit_records(None, 1000).unwrap()
}

#[test]
fn new_store_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.load_member_access().unwrap(), HashMap::new());
    assert_eq!(records(&store), Vec::new());
}

#[test]
fn open_creates_data_dir_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("a").join("b");
    let store = open(&data_dir);
    assert_eq!(store.path(), data_dir.join(DATABASE_FILE_NAME));
    assert!(data_dir.join("switchyard.db").is_file());
}

#[test]
fn open_fails_when_data_dir_is_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();

    let error = SqliteStore::open(&file.join("data"), SqliteSettings::default()).unwrap_err();
    assert!(
        matches!(error, StoreError::CreateDataDir { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("failed to create data directory"),
        "{message}"
    );
    assert!(message.contains("not-a-dir"), "{message}");
}

#[test]
fn commit_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let first = store
        .commit_member_access("mqtt-cn-sh01", false, &downgrade("mqtt-cn-sh01", 1000))
        .unwrap();
    let second = store
        .commit_member_access("mqtt-cn-bj01", false, &downgrade("mqtt-cn-bj01", 2000))
        .unwrap();
    let third = store
        .commit_member_access("mqtt-cn-sh01", true, &recovery("mqtt-cn-sh01", 3000))
        .unwrap();
    assert!(first < second, "{first:?} {second:?}");
    assert!(second < third, "{second:?} {third:?}");

    let access = store.load_member_access().unwrap();
    assert_eq!(access.len(), 2);
    assert_eq!(access.get("mqtt-cn-sh01"), Some(&true));
    assert_eq!(access.get("mqtt-cn-bj01"), Some(&false));

    let log = records(&store);
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], (first, downgrade("mqtt-cn-sh01", 1000)));
    assert_eq!(log[1], (second, downgrade("mqtt-cn-bj01", 2000)));
    assert_eq!(log[2], (third, recovery("mqtt-cn-sh01", 3000)));
}

#[test]
fn audit_record_fields_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let mut record = downgrade("mqtt-cn-sh01", -5);
    record.source_ip = None;
    record.principal = "root".to_owned();
    record.note = Some("health rule: 3 probes failed\nin a row, 'quoted' \"too\"".to_owned());
    record.request_id = "é 😀 \u{0}".to_owned();
    let id = store.append_audit(&record).unwrap();

    assert_eq!(records(&store), vec![(id, record)]);
}

#[test]
fn append_audit_changes_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit_member_access("mqtt-cn-sh01", false, &downgrade("mqtt-cn-sh01", 1000))
        .unwrap();

    let mut repeat = downgrade("mqtt-cn-sh01", 2000);
    repeat.before = "global_access=off".to_owned();
    repeat.note = Some("already downgraded, nothing changed".to_owned());
    let id = store.append_audit(&repeat).unwrap();

    let access = store.load_member_access().unwrap();
    assert_eq!(access, HashMap::from([("mqtt-cn-sh01".to_owned(), false)]));
    let log = records(&store);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1], (id, repeat));
}

#[test]
fn audit_records_pages_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for time_ms in 0..5 {
        ids.push(
            store
                .append_audit(&downgrade("mqtt-cn-sh01", time_ms))
                .unwrap(),
        );
    }

    let page = store.audit_records(None, 2).unwrap();
    let page_ids: Vec<AuditRecordId> = page.iter().map(|(id, _)| *id).collect();
    assert_eq!(page_ids, ids[0..2]);

    let page = store.audit_records(Some(ids[1]), 2).unwrap();
    let page_ids: Vec<AuditRecordId> = page.iter().map(|(id, _)| *id).collect();
    assert_eq!(page_ids, ids[2..4]);
    assert_eq!(page[0].1.time_ms, 2);

    let page = store.audit_records(Some(ids[3]), 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].0, ids[4]);

    assert_eq!(store.audit_records(Some(ids[4]), 10).unwrap(), Vec::new());
    assert_eq!(store.audit_records(None, 0).unwrap(), Vec::new());
    assert_eq!(store.audit_records(None, usize::MAX).unwrap().len(), 5);
    assert_eq!(
        store
            .audit_records(Some(AuditRecordId(i64::MIN)), 10)
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn reopen_keeps_state_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let (before_access, before_log) = {
        let store = open(dir.path());
        store
            .commit_member_access("mqtt-cn-sh01", false, &downgrade("mqtt-cn-sh01", 1000))
            .unwrap();
        store
            .append_audit(&downgrade("mqtt-cn-sh01", 2000))
            .unwrap();
        store
            .commit_member_access("mqtt-cn-bj01", false, &downgrade("mqtt-cn-bj01", 3000))
            .unwrap();
        (store.load_member_access().unwrap(), records(&store))
    };

    let store = open(dir.path());
    assert_eq!(store.load_member_access().unwrap(), before_access);
    assert_eq!(records(&store), before_log);

    // Ids continue after the restart.
    let next = store.append_audit(&recovery("mqtt-cn-sh01", 4000)).unwrap();
    assert!(next > before_log[2].0, "{next:?}");
}

#[test]
fn schema_version_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));

    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE_NAME)).unwrap();
    let version: i64 = connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

fn set_schema_version(dir: &Path, version: i64) {
    let connection = rusqlite::Connection::open(dir.join(DATABASE_FILE_NAME)).unwrap();
    connection
        .execute("UPDATE schema_version SET version = ?1", [version])
        .unwrap();
}

#[test]
fn open_rejects_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    set_schema_version(dir.path(), 99);

    let error = SqliteStore::open(dir.path(), SqliteSettings::default()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(DATABASE_FILE_NAME), "{message}");
    assert!(message.contains("schema version 99"), "{message}");
    assert!(
        message.contains(&format!("up to {SCHEMA_VERSION}")),
        "{message}"
    );
}

#[test]
fn open_rejects_unknown_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    set_schema_version(dir.path(), 0);

    let error = SqliteStore::open(dir.path(), SqliteSettings::default()).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaUnknown { found: 0, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(DATABASE_FILE_NAME), "{error}");
}

#[test]
fn open_rejects_non_database_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(DATABASE_FILE_NAME),
        b"this is not an SQLite database, but it is long enough to have a header",
    )
    .unwrap();

    let error = SqliteStore::open(dir.path(), SqliteSettings::default()).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StoreError::Sqlite { .. }), "{error:?}");
    assert!(message.contains(DATABASE_FILE_NAME), "{message}");
    assert!(message.contains("not a database"), "{message}");
}

/// Opens a second connection to the store's file and takes the write lock with BEGIN EXCLUSIVE.
fn lock_exclusively(store: &SqliteStore) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(store.path()).unwrap();
    connection.execute_batch("BEGIN EXCLUSIVE").unwrap();
    connection
}

#[test]
fn failed_commit_leaves_state_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let busy_timeout = Duration::from_millis(200);
    let store = open_with_timeout(dir.path(), busy_timeout);
    store
        .commit_member_access("mqtt-cn-sh01", false, &downgrade("mqtt-cn-sh01", 1000))
        .unwrap();
    let access_before = store.load_member_access().unwrap();
    let log_before = records(&store);

    let locker = lock_exclusively(&store);
    let started = Instant::now();
    let result = store.commit_member_access("mqtt-cn-sh01", true, &recovery("mqtt-cn-sh01", 2000));
    let elapsed = started.elapsed();

    let error = result.unwrap_err();
    assert!(error.is_busy(), "{error:?}");
    assert!(elapsed >= busy_timeout, "returned after {elapsed:?}");
    // The upper bound is generous for a loaded machine. It catches a store that waits far
    // longer than its busy timeout.
    assert!(
        elapsed < Duration::from_secs(10),
        "returned after {elapsed:?}"
    );
    let message = error.to_string();
    assert!(message.contains("commit member access failed"), "{message}");
    assert!(message.contains(DATABASE_FILE_NAME), "{message}");
    assert!(message.contains("database is locked"), "{message}");

    // Readers are not blocked by the writer in WAL mode.
    assert_eq!(store.load_member_access().unwrap(), access_before);

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    assert_eq!(store.load_member_access().unwrap(), access_before);
    assert_eq!(records(&store), log_before);

    // The store works again once the lock is released.
    store
        .commit_member_access("mqtt-cn-sh01", true, &recovery("mqtt-cn-sh01", 3000))
        .unwrap();
    let access = store.load_member_access().unwrap();
    assert_eq!(access.get("mqtt-cn-sh01"), Some(&true));
    assert_eq!(records(&store).len(), 2);
}

#[test]
fn failed_append_adds_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_timeout(dir.path(), Duration::from_millis(100));
    store
        .append_audit(&downgrade("mqtt-cn-sh01", 1000))
        .unwrap();
    let log_before = records(&store);

    let locker = lock_exclusively(&store);
    let error = store
        .append_audit(&downgrade("mqtt-cn-sh01", 2000))
        .unwrap_err();
    assert!(error.is_busy(), "{error:?}");
    assert!(
        error.to_string().contains("append audit record failed"),
        "{error}"
    );
    drop(locker);

    assert_eq!(records(&store), log_before);
}

#[test]
fn commit_failing_midway_keeps_no_audit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .commit_member_access("mqtt-cn-sh01", false, &downgrade("mqtt-cn-sh01", 1000))
        .unwrap();
    let access_before = store.load_member_access().unwrap();
    let log_before = records(&store);

    // The audit record is inserted first, so a failing state update must take it back out.
    let saboteur = rusqlite::Connection::open(store.path()).unwrap();
    saboteur
        .execute_batch(
            "CREATE TRIGGER reject_access_update BEFORE UPDATE ON member_access
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END;",
        )
        .unwrap();

    let error = store
        .commit_member_access("mqtt-cn-sh01", true, &recovery("mqtt-cn-sh01", 2000))
        .unwrap_err();
    assert!(!error.is_busy(), "{error:?}");
    assert!(error.to_string().contains("simulated failure"), "{error}");

    assert_eq!(store.load_member_access().unwrap(), access_before);
    assert_eq!(records(&store), log_before);
}

#[test]
fn store_is_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(open(dir.path()));

    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let instance = format!("mqtt-cn-t{thread}");
                (0..10)
                    .map(|step| {
                        let record = downgrade(&instance, thread * 100 + step);
                        store.commit_member_access(&instance, step % 2 == 1, &record)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for thread in threads {
        ids.extend(thread.join().unwrap().unwrap());
    }

    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    let access = store.load_member_access().unwrap();
    assert_eq!(access.len(), 4);
    assert!(access.values().all(|global_access| *global_access));
    assert_eq!(store.audit_records(None, 100).unwrap().len(), 40);
}
