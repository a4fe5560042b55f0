//! The OnsMqtt actions, one module per action family.
//!
//! To add an action: write a handler `fn(ActionRequest<'_>) -> ActionFuture<'_>` in the module
//! of its family and add one arm to [`find`]. A handler validates its parameters, then calls
//! [`ActionRequest::authorize`], then its backend, and returns the success body.

mod disaster_recovery;
mod group_id;
mod params;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;

use crate::account::Statement;
use crate::backend::{ActionContext, DisasterRecoveryBackend, GroupIdBackend};
use crate::encoding::Params;
use crate::errors::ApiError;
use crate::ram::{self, InstanceResource};

/// The backends the actions call.
pub(crate) struct Services {
    /// Also the source of instance regions for RAM resource names.
    pub(crate) disaster_recovery: Arc<dyn DisasterRecoveryBackend>,
    pub(crate) group_ids: Arc<dyn GroupIdBackend>,
}

impl Services {
    fn instance_region(&self, instance_id: &str) -> Option<String> {
        self.disaster_recovery.instance_region(instance_id)
    }
}

/// Everything a handler needs about an authenticated request.
pub(crate) struct ActionRequest<'a> {
    pub(crate) ctx: &'a ActionContext,
    pub(crate) params: &'a Params,
    pub(crate) services: &'a Services,
    /// RAM policy statements of the caller; ignored for root keys.
    pub(crate) policies: &'a [Statement],
}

impl ActionRequest<'_> {
    /// Checks the caller's RAM policy for `ram_action` (such as `mq:DisasterDowngrade`) on the
    /// given instances, and returns 403 `NoPermission` on a denial.
    pub(crate) fn authorize(
        &self,
        ram_action: &str,
        instance_ids: &[&str],
    ) -> Result<(), ApiError> {
        let mut resources: Vec<InstanceResource> = Vec::with_capacity(instance_ids.len());
        for &instance_id in instance_ids {
            if resources.iter().any(|r| r.instance_id == instance_id) {
                continue;
            }
            resources.push(InstanceResource {
                instance_id: instance_id.to_owned(),
                region: self.services.instance_region(instance_id),
            });
        }
        ram::authorize(&self.ctx.caller, self.policies, ram_action, &resources)
            .map_err(|denial| ApiError::no_permission(&denial))
    }
}

/// The JSON body of a successful action.
pub(crate) struct ActionOutput {
    pub(crate) body: Vec<u8>,
}

impl ActionOutput {
    fn json(value: &impl Serialize) -> Result<Self, ApiError> {
        serde_json::to_vec(value)
            .map(|body| Self { body })
            .map_err(|error| {
                ApiError::internal(format!("The response could not be serialized: {error}."))
            })
    }
}

pub(crate) type ActionFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ActionOutput, ApiError>> + Send + 'a>>;

pub(crate) type ActionHandler = for<'a> fn(ActionRequest<'a>) -> ActionFuture<'a>;

/// Returns the handler of an OnsMqtt action, or `None` for a name this server does not serve.
pub(crate) fn find(action: &str) -> Option<ActionHandler> {
    match action {
        "DisasterDowngrade" => Some(disaster_recovery::downgrade),
        "DisasterRecovery" => Some(disaster_recovery::recover),
        "CreateGroupId" => Some(group_id::create),
        "DeleteGroupId" => Some(group_id::delete),
        "ListGroupId" => Some(group_id::list),
        _ => None,
    }
}
