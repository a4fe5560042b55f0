//! `DisasterDowngrade` and `DisasterRecovery`: switch a disaster-recovery group member's
//! global-endpoint access off and back on.

use serde::Serialize;

use super::params::instance_id;
use super::{ActionFuture, ActionOutput, ActionRequest};
use crate::errors::ApiError;

/// Success body of both actions. `Code` is an integer here, unlike in `ListInstances`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OperationResult<'a> {
    request_id: &'a str,
    code: u16,
    success: bool,
    message: &'a str,
}

fn operation_success(request_id: &str) -> Result<ActionOutput, ApiError> {
    ActionOutput::json(&OperationResult {
        request_id,
        code: 200,
        success: true,
        message: "operation success.",
    })
}

/// `DisasterDowngrade(InstanceId, DowngradeInstanceId)`, RAM action `mq:DisasterDowngrade`.
pub(super) fn downgrade(request: ActionRequest<'_>) -> ActionFuture<'_> {
    Box::pin(async move {
        let instance = instance_id(request.params, "InstanceId")?;
        let target = instance_id(request.params, "DowngradeInstanceId")?;
        request.authorize("mq:DisasterDowngrade", &[instance, target])?;
        request
            .services
            .disaster_recovery
            .downgrade(request.ctx, instance, target)
            .await
            .map_err(ApiError::from_service)?;
        operation_success(&request.ctx.request_id)
    })
}

/// `DisasterRecovery(InstanceId, RecoveryInstanceId)`, RAM action `mq:DisasterRecovery`.
pub(super) fn recover(request: ActionRequest<'_>) -> ActionFuture<'_> {
    Box::pin(async move {
        let instance = instance_id(request.params, "InstanceId")?;
        let target = instance_id(request.params, "RecoveryInstanceId")?;
        request.authorize("mq:DisasterRecovery", &[instance, target])?;
        request
            .services
            .disaster_recovery
            .recover(request.ctx, instance, target)
            .await
            .map_err(ApiError::from_service)?;
        operation_success(&request.ctx.request_id)
    })
}
