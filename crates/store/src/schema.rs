//! The SQLite schema and its version.
//!
//! The `schema_version` table contains one row with the schema version the file was written
//! with. A build opens files of its own [`SCHEMA_VERSION`] and rejects newer ones. A schema
//! change raises the version and adds a step to [`migrate`] that upgrades the previous one.
//! Version 1 files are upgraded to version 2 in place when they are opened.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::StoreError;
use crate::sqlite::sqlite_error;

/// The schema version this build writes and the newest it can open.
pub const SCHEMA_VERSION: i64 = 2;

/// Version 1: the audit log and the global-endpoint access of DR group members.
///
/// `audit_log.id` is AUTOINCREMENT, so the ids of deleted records are never reused and a
/// reader's cursor stays valid. `member_access.audit_id` is the audit record of the last change.
const SCHEMA_V1: &str = "
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
";

/// Version 2 adds the Group IDs created through the API, one row per instance and Group ID.
///
/// `tags` is a JSON array of `{"key","value"}` objects. `audit_id` is the audit record of the
/// creation.
const SCHEMA_V2: &str = "
CREATE TABLE group_ids (
    instance_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    create_time_ms INTEGER NOT NULL,
    update_time_ms INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    audit_id INTEGER NOT NULL REFERENCES audit_log (id),
    PRIMARY KEY (instance_id, group_id)
);
";

/// Creates the schema in a new file, or checks the version of an existing one.
///
/// Runs in one IMMEDIATE transaction, so two processes opening a new file at once cannot both
/// create the schema.
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    const OPERATION: &str = "create or check schema";
    let error = || sqlite_error(OPERATION, path);

    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error())?;
    transaction
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 version INTEGER NOT NULL
             )",
        )
        .map_err(error())?;
    let found: Option<i64> = transaction
        .query_row(
            "SELECT version FROM schema_version WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(error())?;

    match found {
        None => {
            transaction.execute_batch(SCHEMA_V1).map_err(error())?;
            transaction.execute_batch(SCHEMA_V2).map_err(error())?;
            transaction
                .execute(
                    "INSERT INTO schema_version (id, version) VALUES (1, ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(error())?;
        }
        Some(1) => {
            transaction.execute_batch(SCHEMA_V2).map_err(error())?;
            transaction
                .execute(
                    "UPDATE schema_version SET version = ?1 WHERE id = 1",
                    [SCHEMA_VERSION],
                )
                .map_err(error())?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(found) if found > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Some(found) => {
            return Err(StoreError::SchemaUnknown {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    transaction.commit().map_err(error())
}
