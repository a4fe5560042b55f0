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
}

impl StoreError {
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
