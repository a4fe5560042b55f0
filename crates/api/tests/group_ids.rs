//! `CreateGroupId`, `DeleteGroupId` and `ListGroupId` over real HTTP: success bodies,
//! parameter checks, RAM policies, the order of the checks and the mapping of backend errors.

mod common;

use common::{Reply, TestServer, assert_error, root_key, user_key};
use serde_json::json;
use switchyard_api::{GroupIdInfo, ServiceError, Tag};

const CREATE: &str = "CreateGroupId";
const DELETE: &str = "DeleteGroupId";
const LIST: &str = "ListGroupId";

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn info(group_id: &str, instance_id: &str, tags: Vec<Tag>) -> GroupIdInfo {
    GroupIdInfo {
        group_id: group_id.to_owned(),
        instance_id: instance_id.to_owned(),
        create_time_ms: 1_700_000_000_000,
        update_time_ms: 1_700_000_000_001,
        tags,
    }
}

fn request_id(reply: &Reply) -> &str {
    reply.body["RequestId"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn create_returns_request_id_only() {
    let server = TestServer::start().await;
    let form = [
        ("InstanceId", "mqtt-cn-aaa"),
        ("GroupId", "GID_sensors"),
        ("Tags", r#"[{"key":"team","value":"fleet"}]"#),
    ];
    let reply = server.send(&server.acs3(&root_key(), CREATE, &form)).await;

    assert_eq!(reply.status, 200, "{}", reply.raw_body);
    assert_eq!(reply.fields(), vec!["RequestId"]);
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "create_group_id");
    assert_eq!(calls[0].instance_id, "mqtt-cn-aaa");
    assert_eq!(calls[0].target_instance_id, "GID_sensors");
    assert_eq!(calls[0].ctx.action, CREATE);
    assert_eq!(calls[0].ctx.request_id, request_id(&reply));
    let created_tags = server.backend.created_tags.lock().unwrap().clone();
    assert_eq!(created_tags, vec![vec![tag("team", "fleet")]]);
}

#[tokio::test]
async fn delete_returns_request_id_only() {
    let server = TestServer::start().await;
    let form = [("InstanceId", "mqtt-cn-aaa"), ("GroupId", "GID-sensors")];
    let reply = server.send(&server.hmac(&root_key(), DELETE, &form)).await;

    assert_eq!(reply.status, 200, "{}", reply.raw_body);
    assert_eq!(reply.fields(), vec!["RequestId"]);
    let calls = server.backend.calls();
    assert_eq!(calls[0].method, "delete_group_id");
    assert_eq!(calls[0].target_instance_id, "GID-sensors");
}

#[tokio::test]
async fn list_has_cloud_fields() {
    let server = TestServer::start().await;
    *server.backend.group_ids.lock().unwrap() = vec![
        info("GID_a", "mqtt-cn-aaa", vec![tag("team", "fleet")]),
        info("GID_b", "mqtt-cn-bbb", Vec::new()),
    ];
    let form = [("InstanceId", "mqtt-cn-aaa")];
    let reply = server.send(&server.acs3(&root_key(), LIST, &form)).await;

    assert_eq!(reply.status, 200, "{}", reply.raw_body);
    assert_eq!(reply.fields(), vec!["Data", "RequestId"]);
    assert_eq!(
        reply.body["Data"],
        json!([
            {
                "GroupId": "GID_a",
                "InstanceId": "mqtt-cn-aaa",
                "CreateTime": 1_700_000_000_000_i64,
                "UpdateTime": 1_700_000_000_001_i64,
                "IndependentNaming": true,
                "Tags": [{"TagKey": "team", "TagValue": "fleet"}],
            },
            {
                "GroupId": "GID_b",
                "InstanceId": "mqtt-cn-bbb",
                "CreateTime": 1_700_000_000_000_i64,
                "UpdateTime": 1_700_000_000_001_i64,
                "IndependentNaming": true,
                "Tags": [],
            },
        ])
    );
}

/// Lists the Group IDs of `mqtt-cn-aaa` with the `Tags` filter `tags`.
async fn listed(server: &TestServer, tags: &str) -> Vec<String> {
    let form = [("InstanceId", "mqtt-cn-aaa"), ("Tags", tags)];
    let reply = server.send(&server.acs3(&root_key(), LIST, &form)).await;
    assert_eq!(reply.status, 200, "{}", reply.raw_body);
    reply.body["Data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item["GroupId"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn list_filters_by_every_tag() {
    let server = TestServer::start().await;
    *server.backend.group_ids.lock().unwrap() = vec![
        info(
            "GID_both",
            "mqtt-cn-aaa",
            vec![tag("team", "fleet"), tag("tier", "gold")],
        ),
        info("GID_team", "mqtt-cn-aaa", vec![tag("team", "fleet")]),
        info("GID_other", "mqtt-cn-aaa", vec![tag("team", "ops")]),
        info("GID_none", "mqtt-cn-aaa", Vec::new()),
    ];
    assert_eq!(
        listed(&server, r#"[{"key":"team","value":"fleet"}]"#).await,
        ["GID_both", "GID_team"]
    );
    assert_eq!(
        listed(
            &server,
            r#"[{"key":"team","value":"fleet"},{"key":"tier","value":"gold"}]"#
        )
        .await,
        ["GID_both"]
    );
    assert_eq!(listed(&server, "[]").await.len(), 4);
}

/// An action, its form and a text its error message must contain.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

#[tokio::test]
async fn malformed_parameters_fail_field_check() {
    let server = TestServer::start().await;
    let cases: [Case; 6] = [
        (
            CREATE,
            vec![("InstanceId", "mqtt-cn-aaa"), ("GroupId", LONG_GROUP_ID)],
            "a Group ID at most 60",
        ),
        (
            CREATE,
            vec![("InstanceId", "mqtt-cn-aaa"), ("GroupId", "sensors")],
            "\"sensors\"",
        ),
        (
            CREATE,
            vec![("InstanceId", "mqtt cn"), ("GroupId", "GID_sensors")],
            "\"mqtt cn\"",
        ),
        (
            CREATE,
            vec![
                ("InstanceId", "mqtt-cn-aaa"),
                ("GroupId", "GID_sensors"),
                ("Tags", "team=fleet"),
            ],
            "\"team=fleet\"",
        ),
        (
            DELETE,
            vec![("InstanceId", "mqtt-cn-aaa"), ("GroupId", "GID_a.b")],
            "\"GID_a.b\"",
        ),
        (
            LIST,
            vec![("InstanceId", "mqtt-cn-aaa"), ("Tags", "[1]")],
            "\"[1]\"",
        ),
    ];
    for (action, form, needle) in cases {
        let reply = server.send(&server.acs3(&root_key(), action, &form)).await;
        assert_error(&reply, 400, "ParameterFieldCheckFailed");
        assert!(
            reply.message().contains(needle),
            "{action} {form:?}: {}",
            reply.message()
        );
    }
    assert_eq!(server.backend.calls(), Vec::new());
}

/// 61 characters: a valid Group ID by the cloud's documented 64, but no client id
/// `GroupId@@@DeviceId` of at most 64 characters has room for it.
const LONG_GROUP_ID: &str = "GID_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test]
async fn absent_parameters_are_missing() {
    let server = TestServer::start().await;
    let cases = [
        (
            CREATE,
            vec![("InstanceId", "mqtt-cn-aaa")],
            "MissingGroupId",
        ),
        (
            DELETE,
            vec![("InstanceId", "mqtt-cn-aaa")],
            "MissingGroupId",
        ),
        (
            CREATE,
            vec![("GroupId", "GID_sensors")],
            "MissingInstanceId",
        ),
        (LIST, vec![], "MissingInstanceId"),
    ];
    for (action, form, code) in cases {
        let reply = server.send(&server.acs3(&root_key(), action, &form)).await;
        assert_error(&reply, 400, code);
        assert!(
            reply.message().contains("is mandatory for this action."),
            "{action} {form:?}: {}",
            reply.message()
        );
    }
    assert_eq!(server.backend.calls(), Vec::new());
}

#[tokio::test]
async fn ram_actions_and_resources() {
    let server = TestServer::start().await;
    server.backend.set_region("mqtt-cn-aaa", "cn-hangzhou");
    server.backend.set_region("mqtt-cn-bbb", "cn-shanghai");
    let create = [("InstanceId", "mqtt-cn-aaa"), ("GroupId", "GID_sensors")];
    let list = [("InstanceId", "mqtt-cn-bbb")];

    // `operator` may only call mq:Disaster*, so it gets an implicit deny.
    let reply = server
        .send(&server.acs3(&user_key("operator"), CREATE, &create))
        .await;
    assert_error(&reply, 403, "NoPermission");
    let detail = &reply.body["AccessDeniedDetail"];
    assert_eq!(detail["AuthAction"], json!("mq:CreateMqttGroupId"));
    assert_eq!(detail["NoPermissionType"], json!("ImplicitDeny"));
    assert!(
        reply
            .message()
            .contains("acs:mq:cn-hangzhou:1000000000000001:mqtt-cn-aaa"),
        "{}",
        reply.message()
    );

    let reply = server
        .send(&server.acs3(&user_key("operator"), DELETE, &create))
        .await;
    assert_eq!(
        reply.body["AccessDeniedDetail"]["AuthAction"],
        json!("mq:DeleteMqttGroupId")
    );
    let reply = server
        .send(&server.acs3(&user_key("operator"), LIST, &list))
        .await;
    assert_eq!(
        reply.body["AccessDeniedDetail"]["AuthAction"],
        json!("mq:ListMqttGroupId")
    );

    // `restricted` may call mq:* on mqtt-cn-aaa only, `hangzhou` in cn-hangzhou only.
    for user in ["restricted", "hangzhou"] {
        let reply = server
            .send(&server.acs3(&user_key(user), CREATE, &create))
            .await;
        assert_eq!(reply.status, 200, "{user}: {}", reply.raw_body);
        let reply = server
            .send(&server.acs3(&user_key(user), LIST, &list))
            .await;
        assert_error(&reply, 403, "NoPermission");
    }
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
}

#[tokio::test]
async fn parameters_are_checked_before_ram() {
    let server = TestServer::start().await;
    let form = [("InstanceId", "mqtt-cn-aaa"), ("GroupId", "bad")];
    let reply = server
        .send(&server.acs3(&user_key("viewer"), CREATE, &form))
        .await;
    assert_error(&reply, 400, "ParameterFieldCheckFailed");
}

#[tokio::test]
async fn backend_errors_map_to_cloud_codes() {
    let cases = [
        (
            ServiceError::InstanceNotFound {
                message: "instance mqtt-cn-aaa not found".to_owned(),
            },
            400,
            "InstanceNotFound",
        ),
        (
            ServiceError::InstancePermissionCheckFailed {
                message: "owned by another account".to_owned(),
            },
            400,
            "InstancePermissionCheckFailed",
        ),
        (
            ServiceError::GroupIdAlreadyExists {
                message: "GID_sensors exists".to_owned(),
            },
            400,
            "GroupIdAlreadyExsited",
        ),
        (
            ServiceError::ParameterFieldCheckFailed {
                message: "not registered".to_owned(),
            },
            400,
            "ParameterFieldCheckFailed",
        ),
        (
            ServiceError::Internal {
                message: "could not be stored".to_owned(),
            },
            500,
            "InternalError",
        ),
    ];
    for (error, status, code) in cases {
        let server = TestServer::start().await;
        let message = error.to_string();
        server.backend.fail_with(error);
        let form = [("InstanceId", "mqtt-cn-aaa"), ("GroupId", "GID_sensors")];
        for action in [CREATE, DELETE, LIST] {
            let reply = server.send(&server.acs3(&root_key(), action, &form)).await;
            assert_error(&reply, status, code);
            assert!(
                message.ends_with(reply.message()),
                "{message} vs {}",
                reply.message()
            );
        }
    }
}

#[tokio::test]
async fn server_without_backend_answers_api_not_support() {
    use std::sync::Arc;

    use switchyard_api::{ApiServer, ApiSettings, ManualClock};

    let backend = Arc::new(common::RecordingBackend::default());
    let clock = Arc::new(ManualClock::new(common::NOW));
    let server = ApiServer::new(common::accounts(), ApiSettings::default(), backend, clock)
        .expect("valid settings");
    let router = server.router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });

    let signed = switchyard_api::client::build_acs3_request(
        &root_key(),
        &switchyard_api::client::ApiCall {
            method: "POST",
            host: &addr.to_string(),
            action: LIST,
            query: &[],
            form: &[("InstanceId", "mqtt-cn-aaa")],
            time: common::NOW,
            nonce: &common::next_nonce(),
        },
    );
    let reply = common::send_raw_to(addr, &common::to_http(&signed)).await;
    task.abort();
    assert_error(&reply, 404, "ApiNotSupport");
}
