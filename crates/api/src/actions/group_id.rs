//! `CreateGroupId`, `DeleteGroupId` and `ListGroupId`: the Group IDs an instance's client ids
//! may use.
//!
//! Each handler checks its parameters (400 `ParameterFieldCheckFailed`), then the RAM policy on
//! the instance `acs:mq:<region>:<account>:<InstanceId>`, then calls the [`GroupIdBackend`].
//!
//! [`GroupIdBackend`]: crate::GroupIdBackend

use serde::Serialize;

use super::params::{group_id, instance_id_field, tags};
use super::{ActionFuture, ActionOutput, ActionRequest};
use crate::backend::{GroupIdInfo, Tag};
use crate::errors::ApiError;

/// RAM action of `CreateGroupId`, as the cloud documents it.
const CREATE_RAM_ACTION: &str = "mq:CreateMqttGroupId";
/// RAM action of `DeleteGroupId`.
// NOTE: the notes on the cloud product confirm only mq:CreateMqttGroupId, so this name and the
// one of ListGroupId follow its pattern.
const DELETE_RAM_ACTION: &str = "mq:DeleteMqttGroupId";
/// RAM action of `ListGroupId`.
const LIST_RAM_ACTION: &str = "mq:ListMqttGroupId";

/// Success body of `CreateGroupId` and `DeleteGroupId`: the request id only.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestIdOnly<'a> {
    request_id: &'a str,
}

/// Success body of `ListGroupId`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListBody<'a> {
    request_id: &'a str,
    data: Vec<GroupIdItem<'a>>,
}

/// One element of `Data` in `ListGroupId`. The times are integers in milliseconds.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GroupIdItem<'a> {
    group_id: &'a str,
    instance_id: &'a str,
    create_time: i64,
    update_time: i64,
    /// Always true: every Switchyard instance is its own namespace, so Group ID names need to
    /// be unique only within an instance.
    independent_naming: bool,
    tags: Vec<TagItem<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagItem<'a> {
    tag_key: &'a str,
    tag_value: &'a str,
}

/// `CreateGroupId(InstanceId, GroupId, Tags)`, RAM action `mq:CreateMqttGroupId`.
pub(super) fn create(request: ActionRequest<'_>) -> ActionFuture<'_> {
    Box::pin(async move {
        let instance = instance_id_field(request.params, "InstanceId")?;
        let group = group_id(request.params)?;
        let tags = tags(request.params)?;
        request.authorize(CREATE_RAM_ACTION, &[instance])?;
        request
            .services
            .group_ids
            .create_group_id(request.ctx, instance, group, &tags)
            .await
            .map_err(ApiError::from_service)?;
        ActionOutput::json(&RequestIdOnly {
            request_id: &request.ctx.request_id,
        })
    })
}

/// `DeleteGroupId(InstanceId, GroupId)`, RAM action `mq:DeleteMqttGroupId`.
pub(super) fn delete(request: ActionRequest<'_>) -> ActionFuture<'_> {
    Box::pin(async move {
        let instance = instance_id_field(request.params, "InstanceId")?;
        let group = group_id(request.params)?;
        request.authorize(DELETE_RAM_ACTION, &[instance])?;
        request
            .services
            .group_ids
            .delete_group_id(request.ctx, instance, group)
            .await
            .map_err(ApiError::from_service)?;
        ActionOutput::json(&RequestIdOnly {
            request_id: &request.ctx.request_id,
        })
    })
}

/// `ListGroupId(InstanceId, Tags)`, RAM action `mq:ListMqttGroupId`. With `Tags`, only Group
/// IDs that carry every given tag, key and value alike, are listed.
pub(super) fn list(request: ActionRequest<'_>) -> ActionFuture<'_> {
    Box::pin(async move {
        let instance = instance_id_field(request.params, "InstanceId")?;
        let filter = tags(request.params)?;
        request.authorize(LIST_RAM_ACTION, &[instance])?;
        let group_ids = request
            .services
            .group_ids
            .list_group_ids(request.ctx, instance)
            .await
            .map_err(ApiError::from_service)?;
        let data = group_ids
            .iter()
            .filter(|info| has_every_tag(info, &filter))
            .map(item)
            .collect();
        ActionOutput::json(&ListBody {
            request_id: &request.ctx.request_id,
            data,
        })
    })
}

fn has_every_tag(info: &GroupIdInfo, filter: &[Tag]) -> bool {
    filter.iter().all(|wanted| info.tags.contains(wanted))
}

fn item(info: &GroupIdInfo) -> GroupIdItem<'_> {
    GroupIdItem {
        group_id: &info.group_id,
        instance_id: &info.instance_id,
        create_time: info.create_time_ms,
        update_time: info.update_time_ms,
        independent_naming: true,
        tags: info
            .tags
            .iter()
            .map(|tag| TagItem {
                tag_key: &tag.key,
                tag_value: &tag.value,
            })
            .collect(),
    }
}
