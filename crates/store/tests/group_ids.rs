//! Group ID records of `SqliteStore` against real database files in temporary directories.

use std::path::Path;
use std::time::Duration;

use switchyard_store::{
    AuditRecord, AuditRecordId, DATABASE_FILE_NAME, GroupIdCreated, GroupIdDeleted, GroupIdRecord,
    GroupIdTag, SCHEMA_VERSION, SqliteSettings, SqliteStore, Store, StoreError,
};

fn audit(action: &str, instance_id: &str, group_id: &str, time_ms: i64) -> AuditRecord {
    let (before, after) = if action == "CreateGroupId" {
        (
            format!("{group_id}=absent"),
            format!("{group_id}=registered"),
        )
    } else {
        (
            format!("{group_id}=registered"),
            format!("{group_id}=absent"),
        )
    };
    AuditRecord {
        time_ms,
        request_id: format!("REQUEST-{time_ms}"),
        account_id: "1000000000000001".to_owned(),
        principal: "root".to_owned(),
        access_key_id: "LTAIexample".to_owned(),
        source_ip: Some("127.0.0.1".to_owned()),
        action: action.to_owned(),
        group_id: "global".to_owned(),
        instance_id: instance_id.to_owned(),
        target_instance_id: instance_id.to_owned(),
        before,
        after,
        note: None,
    }
}

fn record(instance_id: &str, group_id: &str, time_ms: i64) -> GroupIdRecord {
    GroupIdRecord {
        instance_id: instance_id.to_owned(),
        group_id: group_id.to_owned(),
        create_time_ms: time_ms,
        update_time_ms: time_ms,
        tags: Vec::new(),
    }
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, SqliteSettings::default()).unwrap()
}

fn create(store: &SqliteStore, instance_id: &str, group_id: &str, time_ms: i64) -> GroupIdCreated {
    store
        .create_group_id(
            &record(instance_id, group_id, time_ms),
            &audit("CreateGroupId", instance_id, group_id, time_ms),
        )
        .unwrap()
}

fn audit_count(store: &SqliteStore) -> usize {
    store.audit_records(None, 1000).unwrap().len()
}

#[test]
fn create_list_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.load_group_ids().unwrap(), Vec::new());

    let mut tagged = record("mqtt-cn-sh01", "GID_tagged", 2000);
    tagged.tags = vec![
        GroupIdTag {
            key: "team".to_owned(),
            value: "fleet".to_owned(),
        },
        GroupIdTag {
            key: "empty".to_owned(),
            value: String::new(),
        },
    ];
    let first = create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let second = store
        .create_group_id(
            &tagged,
            &audit("CreateGroupId", "mqtt-cn-sh01", "GID_tagged", 2000),
        )
        .unwrap();
    assert!(matches!(first, GroupIdCreated::Created(_)), "{first:?}");
    assert!(matches!(second, GroupIdCreated::Created(_)), "{second:?}");

    let loaded = store.load_group_ids().unwrap();
    assert_eq!(
        loaded,
        vec![record("mqtt-cn-hz01", "GID_demo", 1000), tagged]
    );

    let deleted = store
        .delete_group_id(
            "mqtt-cn-hz01",
            "GID_demo",
            &audit("DeleteGroupId", "mqtt-cn-hz01", "GID_demo", 3000),
        )
        .unwrap();
    assert!(matches!(deleted, GroupIdDeleted::Deleted(_)), "{deleted:?}");
    let loaded = store.load_group_ids().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].group_id, "GID_tagged");

    let log = store.audit_records(None, 10).unwrap();
    let actions: Vec<&str> = log.iter().map(|(_, r)| r.action.as_str()).collect();
    assert_eq!(actions, ["CreateGroupId", "CreateGroupId", "DeleteGroupId"]);
    assert_eq!(log[2].1.before, "GID_demo=registered");
    assert_eq!(log[2].1.after, "GID_demo=absent");
}

#[test]
fn create_returns_audit_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let created = create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let log = store.audit_records(None, 10).unwrap();
    assert_eq!(created, GroupIdCreated::Created(log[0].0));
}

#[test]
fn duplicate_create_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);

    let again = create(&store, "mqtt-cn-hz01", "GID_demo", 2000);
    assert_eq!(again, GroupIdCreated::AlreadyExists);
    assert_eq!(audit_count(&store), 1);
    let loaded = store.load_group_ids().unwrap();
    assert_eq!(loaded, vec![record("mqtt-cn-hz01", "GID_demo", 1000)]);
}

#[test]
fn same_group_id_on_two_instances() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let other = create(&store, "mqtt-cn-sh01", "GID_demo", 2000);
    assert!(matches!(other, GroupIdCreated::Created(_)), "{other:?}");
    assert_eq!(store.load_group_ids().unwrap().len(), 2);
}

#[test]
fn group_ids_are_case_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let upper = create(&store, "mqtt-cn-hz01", "GID_DEMO", 2000);
    assert!(matches!(upper, GroupIdCreated::Created(_)), "{upper:?}");
}

#[test]
fn delete_of_absent_record_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);

    let absent = store
        .delete_group_id(
            "mqtt-cn-sh01",
            "GID_demo",
            &audit("DeleteGroupId", "mqtt-cn-sh01", "GID_demo", 2000),
        )
        .unwrap();
    assert_eq!(absent, GroupIdDeleted::NotFound);
    assert_eq!(audit_count(&store), 1);
    assert_eq!(store.load_group_ids().unwrap().len(), 1);
}

#[test]
fn group_ids_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
        create(&store, "mqtt-cn-hz01", "GID-other", 2000);
    }
    let store = open(dir.path());
    let loaded = store.load_group_ids().unwrap();
    assert_eq!(
        loaded,
        vec![
            record("mqtt-cn-hz01", "GID-other", 2000),
            record("mqtt-cn-hz01", "GID_demo", 1000),
        ]
    );
}

#[test]
fn failed_create_and_delete_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let busy_timeout = Duration::from_millis(200);
    let store = SqliteStore::open(dir.path(), SqliteSettings { busy_timeout }).unwrap();
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let before = store.load_group_ids().unwrap();

    let locker = rusqlite::Connection::open(store.path()).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let error = store
        .create_group_id(
            &record("mqtt-cn-hz01", "GID_new", 2000),
            &audit("CreateGroupId", "mqtt-cn-hz01", "GID_new", 2000),
        )
        .unwrap_err();
    assert!(error.is_busy(), "{error:?}");
    assert!(
        error.to_string().contains("create group id failed"),
        "{error}"
    );
    let error = store
        .delete_group_id(
            "mqtt-cn-hz01",
            "GID_demo",
            &audit("DeleteGroupId", "mqtt-cn-hz01", "GID_demo", 3000),
        )
        .unwrap_err();
    assert!(error.is_busy(), "{error:?}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(store.load_group_ids().unwrap(), before);
    assert_eq!(audit_count(&store), 1);
}

#[test]
fn corrupt_tags_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE_NAME)).unwrap();
    connection
        .execute("UPDATE group_ids SET tags = 'not json'", [])
        .unwrap();

    let error = store.load_group_ids().unwrap_err();
    assert!(
        matches!(error, StoreError::CorruptGroupIdTags { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("GID_demo"), "{message}");
    assert!(message.contains("mqtt-cn-hz01"), "{message}");
}

/// The version 1 schema, as the first release wrote it.
const SCHEMA_V1: &str = "
CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
INSERT INTO schema_version (id, version) VALUES (1, 1);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    access_key_id TEXT NOT NULL,
    source_ip TEXT,
    action TEXT NOT NULL,
    group_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    target_instance_id TEXT NOT NULL,
    before_state TEXT NOT NULL,
    after_state TEXT NOT NULL,
    note TEXT
);
CREATE TABLE member_access (
    instance_id TEXT PRIMARY KEY NOT NULL,
    global_access INTEGER NOT NULL CHECK (global_access IN (0, 1)),
    changed_ms INTEGER NOT NULL,
    audit_id INTEGER NOT NULL REFERENCES audit_log (id)
);
INSERT INTO audit_log (time_ms, request_id, account_id, principal, access_key_id, action,
    group_id, instance_id, target_instance_id, before_state, after_state)
    VALUES (5, 'R', 'a', 'root', 'k', 'DisasterDowngrade', 'global', 'i', 'mqtt-cn-sh01',
    'global_access=on', 'global_access=off');
INSERT INTO member_access VALUES ('mqtt-cn-sh01', 0, 5, 1);
";

#[test]
fn version_1_file_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE_NAME)).unwrap();
        connection.execute_batch(SCHEMA_V1).unwrap();
    }

    let store = open(dir.path());
    assert_eq!(
        store.load_member_access().unwrap().get("mqtt-cn-sh01"),
        Some(&false)
    );
    assert_eq!(store.load_group_ids().unwrap(), Vec::new());
    let created = create(&store, "mqtt-cn-hz01", "GID_demo", 1000);
    // Audit ids continue after the record the old file holds.
    assert_eq!(created, GroupIdCreated::Created(AuditRecordId(2)));
    drop(store);

    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE_NAME)).unwrap();
    let version: i64 = connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}
