//! The interfaces the actions call once a request is authenticated, its parameters are valid and
//! the RAM policy allows it. Another crate implements it against the real state.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use crate::account::Caller;

/// Details of the request a backend call serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionContext {
    /// Uppercase UUID, the `RequestId` of the response; use it in audit records and logs.
    pub request_id: String,
    pub caller: Caller,
    /// The OnsMqtt action name, such as `DisasterDowngrade`.
    pub action: String,
    /// The TCP peer address, when the server was started through [`crate::ApiServer::serve`]
    /// or with connect info.
    pub source_ip: Option<IpAddr>,
}

/// A failure the backend reports. Each variant has a fixed status and code. Every `message` is
/// sent to the caller as the error `Message`, so it should name the value and what to do, and
/// must not contain secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// 400 `InvalidParameter.<name>`: the instances are not in one disaster-recovery group, or
    /// the change would leave the group without a member that has access.
    #[error("invalid parameter {name}: {message}")]
    InvalidParameter { name: String, message: String },
    /// 400 `InstancePermissionCheckFailed`: an instance does not exist or belongs to another
    /// account.
    #[error("instance permission check failed: {message}")]
    InstancePermissionCheckFailed { message: String },
    /// 404 `ApiNotSupport`: an instance is not `platinum` or has disaster recovery disabled.
    #[error("API not supported: {message}")]
    ApiNotSupport { message: String },
    /// 500 `InternalError`: the change could not be stored. The gateway also logs it at error
    /// level with the request id.
    #[error("internal error: {message}")]
    Internal { message: String },
    /// 400 `InstanceNotFound`: the instance of a Group ID action does not exist.
    #[error("instance not found: {message}")]
    InstanceNotFound { message: String },
    /// 400 `GroupIdAlreadyExsited` (the cloud's spelling): the instance already has the Group
    /// ID.
    #[error("group id already exists: {message}")]
    GroupIdAlreadyExists { message: String },
    /// 400 `ParameterFieldCheckFailed`: a Group ID action names a Group ID that cannot be
    /// deleted, because it is not registered on the instance or comes from the configuration
    /// file.
    #[error("parameter field check failed: {message}")]
    ParameterFieldCheckFailed { message: String },
}

/// The future every backend method returns.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ServiceError>> + Send + 'a>>;

/// The `DisasterDowngrade` and `DisasterRecovery` actions.
///
/// The gateway has already checked that both instance ids are well formed and that the RAM
/// policy allows the action on both. The backend then checks, in this order:
/// 1. both instances exist and belong to `ctx.caller.account_id`;
/// 2. both are `platinum` with disaster recovery enabled;
/// 3. both are in one group;
/// 4. for a downgrade, a member with access remains.
pub trait DisasterRecoveryBackend: Send + Sync + 'static {
    /// Turns off global-endpoint access of `downgrade_instance_id`. Succeeds without change if
    /// it is already off.
    fn downgrade<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        downgrade_instance_id: &'a str,
    ) -> BackendFuture<'a, ()>;

    /// Turns global-endpoint access of `recovery_instance_id` back on. Succeeds without change
    /// if it is already on.
    fn recover<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        recovery_instance_id: &'a str,
    ) -> BackendFuture<'a, ()>;

    /// Returns the region of an instance, such as `cn-hangzhou`, for RAM resource names. With
    /// `None`, the default, RAM policies match the region segment of a resource as `*`.
    fn instance_region(&self, instance_id: &str) -> Option<String> {
        let _ = instance_id;
        None
    }
}

/// A tag of a Group ID: the `key` and `value` of one element of the `Tags` parameter, and the
/// `TagKey` and `TagValue` of one element of `Tags` in a `ListGroupId` response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// One element of the `Data` array of `ListGroupId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupIdInfo {
    /// The Group ID, such as `GID_demo`.
    pub group_id: String,
    /// The instance whose record this is. It can differ from the instance listed when the
    /// Group ID is shared within a disaster-recovery group.
    pub instance_id: String,
    /// Creation time, in milliseconds since the Unix epoch.
    pub create_time_ms: i64,
    /// Time of the last change, in milliseconds since the Unix epoch.
    pub update_time_ms: i64,
    pub tags: Vec<Tag>,
}

/// The `CreateGroupId`, `DeleteGroupId` and `ListGroupId` actions.
///
/// The gateway has already checked that the instance id and Group ID are well formed, parsed
/// the tags and checked that the RAM policy allows the action on the instance. The backend
/// checks, in this order, that the instance exists ([`ServiceError::InstanceNotFound`]) and
/// belongs to `ctx.caller.account_id` ([`ServiceError::InstancePermissionCheckFailed`]), then
/// the action's own rules.
pub trait GroupIdBackend: Send + Sync + 'static {
    /// Registers `group_id` on `instance_id` with `tags`, durably. Fails with
    /// [`ServiceError::GroupIdAlreadyExists`] when the instance already has it.
    fn create_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
        tags: &'a [Tag],
    ) -> BackendFuture<'a, ()>;

    /// Removes `group_id` from `instance_id`, durably. Fails with
    /// [`ServiceError::ParameterFieldCheckFailed`] when the instance has no such Group ID that
    /// the API may delete.
    fn delete_group_id<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        group_id: &'a str,
    ) -> BackendFuture<'a, ()>;

    /// Returns the Group IDs that logins on `instance_id` accept.
    fn list_group_ids<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
    ) -> BackendFuture<'a, Vec<GroupIdInfo>>;
}

/// The [`GroupIdBackend`] of a server built without one. Every call fails with 404
/// `ApiNotSupport`.
pub(crate) struct NoGroupIdBackend;

impl NoGroupIdBackend {
    fn unsupported<T: Send + 'static>() -> BackendFuture<'static, T> {
        Box::pin(std::future::ready(Err(ServiceError::ApiNotSupport {
            message: "Group ID management is not enabled on this server. Start the server \
                      with a Group ID backend, as switchyard serve does."
                .to_owned(),
        })))
    }
}

impl GroupIdBackend for NoGroupIdBackend {
    fn create_group_id<'a>(
        &'a self,
        _ctx: &'a ActionContext,
        _instance_id: &'a str,
        _group_id: &'a str,
        _tags: &'a [Tag],
    ) -> BackendFuture<'a, ()> {
        Self::unsupported()
    }

    fn delete_group_id<'a>(
        &'a self,
        _ctx: &'a ActionContext,
        _instance_id: &'a str,
        _group_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Self::unsupported()
    }

    fn list_group_ids<'a>(
        &'a self,
        _ctx: &'a ActionContext,
        _instance_id: &'a str,
    ) -> BackendFuture<'a, Vec<GroupIdInfo>> {
        Self::unsupported()
    }
}
