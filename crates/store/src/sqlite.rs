//! [`SqliteStore`]: the [`Store`] in one SQLite file under the data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Row, Transaction, TransactionBehavior, params};

use crate::audit::{AuditRecord, AuditRecordId};
use crate::error::StoreError;
use crate::group_id::{GroupIdCreated, GroupIdDeleted, GroupIdRecord, GroupIdTag};
use crate::{Store, schema};

/// The name of the database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "switchyard.db";

/// Settings of a [`SqliteStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteSettings {
    /// Maximum time an operation waits for a lock held by another connection to the same file
    /// before it fails. The default is 5 s.
    pub busy_timeout: Duration,
}

impl Default for SqliteSettings {
    fn default() -> SqliteSettings {
        SqliteSettings {
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The [`Store`] in the SQLite file `switchyard.db` in the data directory.
///
/// The database runs in WAL journal mode with `synchronous=FULL`, so a commit that returns `Ok`
/// has been synced to disk and survives a crash or power loss (if the disk honours fsync).
/// Each write is one transaction, so a failed write changes nothing.
///
/// All operations share one connection behind a [`std::sync::Mutex`]. They block on disk I/O,
/// on each other and, for up to [`SqliteSettings::busy_timeout`], on locks that other
/// connections hold, so async code should call them inside `tokio::task::spawn_blocking`.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens the store in `data_dir`, creating the directory and the database file if they do
    /// not exist and the schema if the file is new.
    ///
    /// Fails if the file was written by a newer Switchyard ([`StoreError::SchemaTooNew`]), if
    /// SQLite cannot use WAL on the file system, or if SQLite fails. A file that another
    /// process has open in a write transaction makes this wait for up to the busy timeout.
    pub fn open(data_dir: &Path, settings: SqliteSettings) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::CreateDataDir {
            path: data_dir.to_owned(),
            error,
        })?;
        let path = data_dir.join(DATABASE_FILE_NAME);

        let mut connection = Connection::open(&path).map_err(sqlite_error("open", &path))?;
        configure(&connection, &path, &settings)?;
        schema::migrate(&mut connection, &path)?;

        Ok(SqliteStore {
            path,
            connection: Mutex::new(connection),
        })
    }

    /// Returns the path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the connection.
    ///
    /// A panic while the lock was held poisons the mutex, but it cannot leave a half-done write
    /// behind, because dropping an unfinished rusqlite transaction rolls it back. So the
    /// connection is used again rather than failing every later call.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        sqlite_error(operation, &self.path)
    }
}

/// Returns a closure that wraps an SQLite error of `operation` on `path`.
pub(crate) fn sqlite_error(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |error| StoreError::Sqlite {
        operation,
        path,
        error,
    }
}

/// Sets the busy timeout and the pragmas every connection needs.
fn configure(
    connection: &Connection,
    path: &Path,
    settings: &SqliteSettings,
) -> Result<(), StoreError> {
    connection
        .busy_timeout(settings.busy_timeout)
        .map_err(sqlite_error("set busy timeout", path))?;

    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite_error("set journal_mode=WAL", path))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::WalUnavailable {
            path: path.to_owned(),
            mode,
        });
    }

    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_error("set synchronous=FULL", path))?;
    connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(sqlite_error("set foreign_keys=ON", path))?;
    Ok(())
}

const AUDIT_COLUMNS: &str = "id, time_ms, request_id, account_id, principal, access_key_id, \
     source_ip, action, group_id, instance_id, target_instance_id, before_state, after_state, note";

fn insert_audit(transaction: &Transaction<'_>, audit: &AuditRecord) -> rusqlite::Result<i64> {
    transaction.execute(
        "INSERT INTO audit_log (time_ms, request_id, account_id, principal, access_key_id, \
         source_ip, action, group_id, instance_id, target_instance_id, before_state, \
         after_state, note) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            audit.time_ms,
            audit.request_id,
            audit.account_id,
            audit.principal,
            audit.access_key_id,
            audit.source_ip,
            audit.action,
            audit.group_id,
            audit.instance_id,
            audit.target_instance_id,
            audit.before,
            audit.after,
            audit.note,
        ],
    )?;
    Ok(transaction.last_insert_rowid())
}

fn read_audit_row(row: &Row<'_>) -> rusqlite::Result<(AuditRecordId, AuditRecord)> {
    let record = AuditRecord {
        time_ms: row.get(1)?,
        request_id: row.get(2)?,
        account_id: row.get(3)?,
        principal: row.get(4)?,
        access_key_id: row.get(5)?,
        source_ip: row.get(6)?,
        action: row.get(7)?,
        group_id: row.get(8)?,
        instance_id: row.get(9)?,
        target_instance_id: row.get(10)?,
        before: row.get(11)?,
        after: row.get(12)?,
        note: row.get(13)?,
    };
    Ok((AuditRecordId(row.get(0)?), record))
}

/// Reads a `group_ids` row: instance, Group ID, times and the tags as JSON text.
fn read_group_id_row(row: &Row<'_>) -> rusqlite::Result<(GroupIdRecord, String)> {
    let record = GroupIdRecord {
        instance_id: row.get(0)?,
        group_id: row.get(1)?,
        create_time_ms: row.get(2)?,
        update_time_ms: row.get(3)?,
        tags: Vec::new(),
    };
    Ok((record, row.get(4)?))
}

impl Store for SqliteStore {
    fn load_member_access(&self) -> Result<HashMap<String, bool>, StoreError> {
        const OPERATION: &str = "load member access";
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached("SELECT instance_id, global_access FROM member_access")
            .map_err(self.error(OPERATION))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.error(OPERATION))?;
        rows.collect::<rusqlite::Result<HashMap<String, bool>>>()
            .map_err(self.error(OPERATION))
    }

    fn commit_member_access(
        &self,
        instance_id: &str,
        global_access: bool,
        audit: &AuditRecord,
    ) -> Result<AuditRecordId, StoreError> {
        const OPERATION: &str = "commit member access";
        let mut connection = self.lock();

        // IMMEDIATE takes the write lock at BEGIN, so a busy database fails here, before
        // anything is written. Any later error drops the transaction, which rolls it back.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.error(OPERATION))?;
        let audit_id = insert_audit(&transaction, audit).map_err(self.error(OPERATION))?;
        transaction
            .execute(
                "INSERT INTO member_access (instance_id, global_access, changed_ms, audit_id) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (instance_id) DO UPDATE SET \
                 global_access = excluded.global_access, \
                 changed_ms = excluded.changed_ms, \
                 audit_id = excluded.audit_id",
                params![instance_id, global_access, audit.time_ms, audit_id],
            )
            .map_err(self.error(OPERATION))?;
        transaction.commit().map_err(self.error(OPERATION))?;
        Ok(AuditRecordId(audit_id))
    }

    fn load_group_ids(&self) -> Result<Vec<GroupIdRecord>, StoreError> {
        const OPERATION: &str = "load group ids";
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT instance_id, group_id, create_time_ms, update_time_ms, tags \
                 FROM group_ids ORDER BY instance_id, group_id",
            )
            .map_err(self.error(OPERATION))?;
        let rows = statement
            .query_map([], read_group_id_row)
            .map_err(self.error(OPERATION))?;
        let rows = rows
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.error(OPERATION))?;

        let mut records = Vec::with_capacity(rows.len());
        for (mut record, tags) in rows {
            record.tags = serde_json::from_str::<Vec<GroupIdTag>>(&tags).map_err(|error| {
                StoreError::CorruptGroupIdTags {
                    path: self.path.clone(),
                    instance_id: record.instance_id.clone(),
                    group_id: record.group_id.clone(),
                    error,
                }
            })?;
            records.push(record);
        }
        Ok(records)
    }

    fn create_group_id(
        &self,
        record: &GroupIdRecord,
        audit: &AuditRecord,
    ) -> Result<GroupIdCreated, StoreError> {
        const OPERATION: &str = "create group id";
        // safe: a list of structs of two strings always serializes.
        let tags = serde_json::to_string(&record.tags).expect("tags serialize to JSON");
        let mut connection = self.lock();

        // IMMEDIATE takes the write lock at BEGIN, so the existence check and the insert see
        // the same state. Returning early drops the transaction, which rolls it back.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.error(OPERATION))?;
        let exists: bool = transaction
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM group_ids WHERE instance_id = ?1 AND group_id = ?2)",
                params![record.instance_id, record.group_id],
                |row| row.get(0),
            )
            .map_err(self.error(OPERATION))?;
        if exists {
            return Ok(GroupIdCreated::AlreadyExists);
        }
        let audit_id = insert_audit(&transaction, audit).map_err(self.error(OPERATION))?;
        transaction
            .execute(
                "INSERT INTO group_ids (instance_id, group_id, create_time_ms, update_time_ms, \
                 tags, audit_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.instance_id,
                    record.group_id,
                    record.create_time_ms,
                    record.update_time_ms,
                    tags,
                    audit_id
                ],
            )
            .map_err(self.error(OPERATION))?;
        transaction.commit().map_err(self.error(OPERATION))?;
        Ok(GroupIdCreated::Created(AuditRecordId(audit_id)))
    }

    fn delete_group_id(
        &self,
        instance_id: &str,
        group_id: &str,
        audit: &AuditRecord,
    ) -> Result<GroupIdDeleted, StoreError> {
        const OPERATION: &str = "delete group id";
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.error(OPERATION))?;
        let deleted = transaction
            .execute(
                "DELETE FROM group_ids WHERE instance_id = ?1 AND group_id = ?2",
                params![instance_id, group_id],
            )
            .map_err(self.error(OPERATION))?;
        if deleted == 0 {
            return Ok(GroupIdDeleted::NotFound);
        }
        let audit_id = insert_audit(&transaction, audit).map_err(self.error(OPERATION))?;
        transaction.commit().map_err(self.error(OPERATION))?;
        Ok(GroupIdDeleted::Deleted(AuditRecordId(audit_id)))
    }

    fn append_audit(&self, audit: &AuditRecord) -> Result<AuditRecordId, StoreError> {
        const OPERATION: &str = "append audit record";
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.error(OPERATION))?;
        let audit_id = insert_audit(&transaction, audit).map_err(self.error(OPERATION))?;
        transaction.commit().map_err(self.error(OPERATION))?;
        Ok(AuditRecordId(audit_id))
    }

    fn audit_records(
        &self,
        after: Option<AuditRecordId>,
        limit: usize,
    ) -> Result<Vec<(AuditRecordId, AuditRecord)>, StoreError> {
        const OPERATION: &str = "read audit records";
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Ids start at 1, so 0 is before every record.
        let after = after.map_or(0, |id| id.0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);

        let connection = self.lock();
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2");
        let mut statement = connection
            .prepare_cached(&sql)
            .map_err(self.error(OPERATION))?;
        let rows = statement
            .query_map(params![after, limit], read_audit_row)
            .map_err(self.error(OPERATION))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.error(OPERATION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sets_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteSettings::default()).unwrap();
        let connection = store.lock();

        let mode: String = connection
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");

        // 2 is FULL.
        let synchronous: i64 = connection
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 2);

        let foreign_keys: i64 = connection
            .pragma_query_value(None, "foreign_keys", |row| row.get(0))
            .unwrap();
        assert_eq!(foreign_keys, 1);

        let busy_timeout_ms: i64 = connection
            .pragma_query_value(None, "busy_timeout", |row| row.get(0))
            .unwrap();
        assert_eq!(busy_timeout_ms, 5000);
    }

    #[test]
    fn default_busy_timeout_is_five_seconds() {
        assert_eq!(
            SqliteSettings::default().busy_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn store_is_usable_after_poisoning() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteSettings::default()).unwrap();

        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut connection = store.lock();
            let transaction = connection.transaction().unwrap();
            transaction
                .execute(
                    "INSERT INTO audit_log (time_ms, request_id, account_id, principal, \
                     access_key_id, action, group_id, instance_id, target_instance_id, \
                     before_state, after_state) \
                     VALUES (0, 'r', 'a', 'root', 'k', 'DisasterDowngrade', 'g', 'i', 't', \
                     'global_access=on', 'global_access=off')",
                    [],
                )
                .unwrap();
            panic!("simulated panic inside a write");
        }));
        assert!(result.is_err());
        assert!(store.connection.is_poisoned());

        // The unfinished transaction was rolled back, and the store still works.
        assert_eq!(store.audit_records(None, 10).unwrap(), Vec::new());
        assert_eq!(store.load_member_access().unwrap(), HashMap::new());
    }
}
