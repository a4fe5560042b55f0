//! Switchyard's durable state under the data directory, behind the [`Store`] trait.
//!
//! The control-plane state is the global-endpoint access flag of each disaster-recovery group
//! member and the audit log of DR changes. Later control-plane state (tokens, device
//! credentials) and engines for deployments of more than one machine plug in behind the same
//! trait. The data-plane state of MQTT sessions lives in [`message`], behind its own
//! [`MessageStore`] trait.
//!
//! # Layout
//!
//! - [`Store`] (this file): the storage interface.
//! - `audit`: [`AuditRecord`], [`AuditRecordId`] and [`format_audit_record`], the one-line form
//!   that `switchyard audit` prints.
//! - `sqlite`: [`SqliteStore`], the embedded implementation in `switchyard.db`.
//! - `schema`: the SQLite tables and the `schema_version` check.
//! - [`message`]: [`MessageStore`], the data-plane store of sessions, queued, inflight,
//!   retained and will messages, and [`SqliteMessageStore`], its embedded implementation.
//! - [`error`]: [`StoreError`], the error of every operation.

pub mod error;
pub mod message;

mod audit;
mod schema;
mod sqlite;

use std::collections::HashMap;

pub use audit::{AuditRecord, AuditRecordId, format_audit_record, format_utc_ms};
pub use error::StoreError;
pub use message::{
    CorruptRecord, Durability, InflightMessage, InstanceState, MessageStore, MessageStoreSettings,
    MessageStoreStats, PurgeReport, QueueFullPolicy, SessionRecord, SessionState,
    SqliteMessageStore, StoreFuture, StoredMessage, StoredSubscription, StoredWill, UnixMillis,
    WriteBatch, WriteOp,
};
pub use schema::SCHEMA_VERSION;
pub use sqlite::{DATABASE_FILE_NAME, SqliteSettings, SqliteStore};

/// Durable storage of Switchyard's state.
///
/// Every method blocks, and a write returns `Ok` only once its data is on disk. A failed call
/// changes nothing. Async callers should run the methods on `tokio::task::spawn_blocking`.
pub trait Store: Send + Sync + 'static {
    /// Loads the global-endpoint access flag of every DR group member that has a stored state.
    ///
    /// A member missing from the map was never changed, so its access is on.
    fn load_member_access(&self) -> Result<HashMap<String, bool>, StoreError>;

    /// Stores a member's new global-endpoint access flag together with its audit record, in one
    /// transaction, and returns the id of the audit record.
    ///
    /// On error neither the flag nor the audit log has changed.
    fn commit_member_access(
        &self,
        instance_id: &str,
        global_access: bool,
        audit: &AuditRecord,
    ) -> Result<AuditRecordId, StoreError>;

    /// Appends the audit record of a call that changed nothing, such as a repeated downgrade,
    /// and returns its id.
    fn append_audit(&self, audit: &AuditRecord) -> Result<AuditRecordId, StoreError>;

    /// Reads at most `limit` audit records, oldest first, starting after `after` (from the
    /// first record if `None`).
    fn audit_records(
        &self,
        after: Option<AuditRecordId>,
        limit: usize,
    ) -> Result<Vec<(AuditRecordId, AuditRecord)>, StoreError>;
}
