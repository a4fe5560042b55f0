//! The interface the actions call once a request is authenticated, its parameters are valid and
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
