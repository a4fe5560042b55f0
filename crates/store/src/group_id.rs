//! Group IDs created through the management API, as the control-plane store keeps them.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecordId;

/// One tag of a Group ID, as `CreateGroupId` takes it in its `Tags` parameter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupIdTag {
    /// The tag key, such as `team`.
    pub key: String,
    /// The tag value, which may be empty.
    pub value: String,
}

/// A Group ID registered on one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupIdRecord {
    /// The instance the Group ID was created on, such as `mqtt-cn-hz01`.
    pub instance_id: String,
    /// The Group ID, such as `GID_demo`.
    pub group_id: String,
    /// Creation time, in milliseconds since the Unix epoch (UTC).
    pub create_time_ms: i64,
    /// Time of the last change, in milliseconds since the Unix epoch (UTC). Group IDs cannot be
    /// changed after creation, so this equals `create_time_ms`.
    pub update_time_ms: i64,
    /// The tags given at creation, in the order given.
    pub tags: Vec<GroupIdTag>,
}

/// The outcome of [`Store::create_group_id`](crate::Store::create_group_id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupIdCreated {
    /// The record and its audit record were stored, the latter under this id.
    Created(AuditRecordId),
    /// The instance already has a record of this Group ID. Nothing was written.
    AlreadyExists,
}

/// The outcome of [`Store::delete_group_id`](crate::Store::delete_group_id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupIdDeleted {
    /// The record was removed and the audit record stored under this id.
    Deleted(AuditRecordId),
    /// The instance has no record of this Group ID. Nothing was written.
    NotFound,
}
