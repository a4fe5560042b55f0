//! Switchyard's durable state under the data directory, behind the [`Store`] trait.
//!
//! The control-plane state is the global-endpoint access flag of each disaster-recovery group
//! member, the Group IDs created through the management API, and the audit log of both kinds
//! of change. Later control-plane state (tokens, device
//! credentials) and engines for deployments of more than one machine plug in behind the same
//! trait. The data-plane state of MQTT sessions lives in [`message`], behind its own
//! [`MessageStore`] trait.
//!
//! # Layout
//!
//! - [`Store`] (this file): the storage interface.
//! - `audit`: [`AuditRecord`], [`AuditRecordId`] and [`format_audit_record`], the one-line form
//!   that `switchyard audit` prints.
//! - `group_id`: [`GroupIdRecord`] and the outcomes of creating and deleting one.
//! - `sqlite`: [`SqliteStore`], the embedded implementation in `switchyard.db`.
//! - `schema`: the SQLite tables and the `schema_version` check.
//! - [`message`]: [`MessageStore`], the data-plane store of sessions, queued, inflight,
//!   retained and will messages, and [`SqliteMessageStore`], its embedded implementation.
//! - [`error`]: [`StoreError`], the error of every operation.

pub mod error;
pub mod message;

mod audit;
mod group_id;
mod schema;
mod sqlite;

use std::collections::HashMap;

pub use audit::{AuditRecord, AuditRecordId, format_audit_record, format_utc_ms};
pub use error::StoreError;
pub use group_id::{GroupIdCreated, GroupIdDeleted, GroupIdRecord, GroupIdTag};
pub use message::{
    CorruptRecord, Durability, InflightMessage, InstanceState, MessageStore, MessageStoreSettings,
    MessageStoreStats, PurgeReport, QueueFullPolicy, SessionOrigin, SessionRecord, SessionState,
    SqliteMessageStore, StoreFuture, StoredMessage, StoredSubscription, StoredWill, UnixMillis,
    WriteBatch, WriteOp, WriterPause,
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

    /// Loads every stored Group ID record, ordered by instance id, then Group ID.
    fn load_group_ids(&self) -> Result<Vec<GroupIdRecord>, StoreError>;

    /// Stores a new Group ID record together with its audit record, in one transaction.
    ///
    /// Returns [`GroupIdCreated::AlreadyExists`], and writes nothing, when the instance already
    /// has a record of the Group ID. On error nothing has changed.
    fn create_group_id(
        &self,
        record: &GroupIdRecord,
        audit: &AuditRecord,
    ) -> Result<GroupIdCreated, StoreError>;

    /// Removes the record of `group_id` on `instance_id` and stores the audit record, in one
    /// transaction.
    ///
    /// Returns [`GroupIdDeleted::NotFound`], and writes nothing, when there is no such record.
    /// On error nothing has changed.
    fn delete_group_id(
        &self,
        instance_id: &str,
        group_id: &str,
        audit: &AuditRecord,
    ) -> Result<GroupIdDeleted, StoreError>;

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
