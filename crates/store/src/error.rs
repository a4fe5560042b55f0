//! The error type of every store operation.

use std::path::PathBuf;

/// A failed store operation, naming the operation and the file it ran on.
///
/// Each message contains the underlying I/O or SQLite message, so it can be shown or logged as
/// it is. An operation that returns an error has changed no stored state, although a failed
/// open may leave behind the data directory and an empty database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("failed to create data directory {}: {error}", path.display())]
    CreateDataDir {
        /// The data directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },

    /// An SQLite call failed, for example because the database is locked by another process
    /// for longer than the busy timeout, or the disk is full.
    #[error("{operation} failed on {}: {error}", path.display())]
    Sqlite {
        /// The store operation, such as `commit member access`.
        operation: &'static str,
        /// The database file.
        path: PathBuf,
        /// The SQLite error, with SQLite's message.
        error: rusqlite::Error,
    },

    /// SQLite opened the database but did not switch it to write-ahead logging, which the
    /// store needs for durable commits that do not block readers.
    #[error(
        "database {} could not be switched to WAL journal mode (it is in {mode:?} mode), \
         so put the data directory on a local file system that supports WAL",
        path.display()
    )]
    WalUnavailable {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported instead of `wal`.
        mode: String,
    },

    /// The database was written by a newer Switchyard whose schema this version cannot read.
    #[error(
        "database {} has schema version {found}, but this Switchyard supports schema versions \
         up to {supported}, so run a Switchyard release that supports version {found} or move \
         the file away to start with an empty store",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version stored in the file.
        found: i64,
        /// The newest schema version this build supports.
        supported: i64,
    },

    /// The database has a schema version that no Switchyard release writes (below 1).
    #[error(
        "database {} has schema version {found}, but Switchyard writes only versions 1 to \
         {supported}, which means the file is damaged or not a Switchyard database. Restore it \
         from a backup, or move it away to start with an empty store",
        path.display()
    )]
    SchemaUnknown {
        /// The database file.
        path: PathBuf,
        /// The schema version stored in the file.
        found: i64,
        /// The newest schema version this build supports.
        supported: i64,
    },
    /// The tags of a stored Group ID are not valid JSON of the expected form, so the file was
    /// changed outside Switchyard or is damaged.
    #[error(
        "tags of Group ID {group_id:?} on instance {instance_id:?} in {} are not a JSON array \
         of key and value strings ({error}); fix or delete the row in table group_ids",
        path.display()
    )]
    CorruptGroupIdTags {
        /// The database file.
        path: PathBuf,
        /// The instance of the record.
        instance_id: String,
        /// The Group ID of the record.
        group_id: String,
        /// The JSON error.
        error: serde_json::Error,
    },

    /// The message store's writer thread could not be started.
    #[error("failed to start the writer thread of message store {}: {error}", path.display())]
    WriterThread {
        /// The database file.
        path: PathBuf,
        /// The I/O error of the thread spawn.
        error: std::io::Error,
    },

    /// The message store was closed before the operation ran.
    #[error("message store {} is closed", path.display())]
    MessageStoreClosed {
        /// The database file.
        path: PathBuf,
    },

    /// The commit of a group of batches failed and was rolled back, so none of them is stored.
    #[error("commit failed on {}: {message}", path.display())]
    CommitFailed {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },

    /// A write refers to a session that the store does not contain.
    #[error(
        "session {client_id:?} of instance {instance_id:?} is not stored, so write the \
         session record before its messages"
    )]
    SessionNotFound {
        /// The instance id of the batch.
        instance_id: String,
        /// The client id of the operation.
        client_id: String,
    },

    /// A session's queue is at the per-session limit and the policy is to reject. The broker
    /// rejects the publish with reason code 0x97 (Quota exceeded).
    #[error(
        "queue of session {client_id:?} in instance {instance_id:?} is full ({limit} messages); \
         raise max_queued_messages_per_session or let the client consume its queue"
    )]
    QueueFull {
        /// The instance id.
        instance_id: String,
        /// The client id of the full queue.
        client_id: String,
        /// The configured limit, in messages.
        limit: u64,
    },

    /// A write would take an instance past its storage limit. The broker rejects the
    /// publish with reason code 0x97 (Quota exceeded).
    #[error(
        "instance {instance_id:?} would exceed its storage limit: {used} bytes used, \
         {requested} more requested, limit {limit} bytes; raise max_instance_bytes or remove \
         sessions and retained messages"
    )]
    InstanceStorageFull {
        /// The instance id.
        instance_id: String,
        /// Bytes stored for the instance before the write.
        used: u64,
        /// Bytes the write adds.
        requested: u64,
        /// The configured limit, in bytes.
        limit: u64,
    },

    /// A write operation has a value the store does not accept, such as QoS 3 or packet id 0.
    #[error("invalid write to instance {instance_id:?}: {reason}")]
    InvalidWrite {
        /// The instance id of the batch.
        instance_id: String,
        /// The invalid value and the rule it breaks.
        reason: String,
    },
}

impl StoreError {
    /// Reports whether a write failed because it reached a queue or storage limit, which the
    /// broker reports to an MQTT 5 publisher as reason code 0x97 (Quota exceeded).
    pub fn is_quota_exceeded(&self) -> bool {
        matches!(
            self,
            StoreError::QueueFull { .. } | StoreError::InstanceStorageFull { .. }
        )
    }

    /// Returns the SQLite error behind this error, if there is one.
    pub fn sqlite_error(&self) -> Option<&rusqlite::Error> {
        match self {
            StoreError::Sqlite { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Reports whether the operation failed because another connection held a lock on the
    /// database for longer than the busy timeout.
    pub fn is_busy(&self) -> bool {
        let Some(rusqlite::Error::SqliteFailure(error, _)) = self.sqlite_error() else {
            return false;
        };
        matches!(
            error.code,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        )
    }
}
