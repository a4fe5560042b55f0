//! `DisasterDowngrade` and `DisasterRecovery` over real HTTP: success bodies, parameter checks,
//! RAM policies, the order of the checks and the mapping of backend errors.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{ACCOUNT_ID, Reply, TestServer, assert_error, root_key, user_key};
use switchyard_api::{Caller, Principal, ServiceError};

const DOWNGRADE: &str = "DisasterDowngrade";
const RECOVERY: &str = "DisasterRecovery";

fn downgrade_form<'a>(instance: &'a str, target: &'a str) -> [(&'static str, &'a str); 2] {
    [("InstanceId", instance), ("DowngradeInstanceId", target)]
}

fn recovery_form<'a>(instance: &'a str, target: &'a str) -> [(&'static str, &'a str); 2] {
    [("InstanceId", instance), ("RecoveryInstanceId", target)]
}

fn assert_operation_success(reply: &Reply) {
    assert_eq!(reply.status, 200, "status of {}", reply.raw_body);
    assert_eq!(
        reply.fields(),
        vec!["Code", "Message", "RequestId", "Success"]
    );
    assert_eq!(reply.body["Code"], serde_json::json!(200));
    assert_eq!(reply.body["Success"], serde_json::json!(true));
    assert_eq!(
        reply.body["Message"],
        serde_json::json!("operation success.")
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn downgrade_succeeds_and_reaches_backend() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&root_key(), DOWNGRADE, &form))
        .await;

    assert_operation_success(&reply);
    let request_id = reply.body["RequestId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(reply.header("x-acs-request-id"), Some(request_id.as_str()));
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "downgrade");
    assert_eq!(call.instance_id, "mqtt-cn-aaa");
    assert_eq!(call.target_instance_id, "mqtt-cn-bbb");
    assert_eq!(call.ctx.request_id, request_id);
    assert_eq!(call.ctx.action, DOWNGRADE);
    assert_eq!(
        call.ctx.caller,
        Caller {
            account_id: ACCOUNT_ID.to_owned(),
            access_key_id: "LTAIroot".to_owned(),
            principal: Principal::Root,
        }
    );
    assert_eq!(call.ctx.source_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
}

#[tokio::test]
async fn recovery_succeeds_and_reaches_backend() {
    let server = TestServer::start().await;
    let form = recovery_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.hmac(&root_key(), RECOVERY, &form))
        .await;

    assert_operation_success(&reply);
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "recover");
    assert_eq!(calls[0].instance_id, "mqtt-cn-aaa");
    assert_eq!(calls[0].target_instance_id, "mqtt-cn-bbb");
    assert_eq!(calls[0].ctx.action, RECOVERY);
}

#[tokio::test]
async fn same_instance_in_both_parameters() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-aaa");

    let reply = server
        .send(&server.acs3(&user_key("restricted"), DOWNGRADE, &form))
        .await;

    assert_operation_success(&reply);
}

#[tokio::test]
async fn missing_parameters_are_named() {
    let server = TestServer::start().await;
    // Each case: action, the one parameter sent, and the missing parameter.
    let cases = [
        (
            DOWNGRADE,
            vec![("DowngradeInstanceId", "mqtt-cn-bbb")],
            "InstanceId",
        ),
        (
            DOWNGRADE,
            vec![("InstanceId", "mqtt-cn-aaa")],
            "DowngradeInstanceId",
        ),
        (
            RECOVERY,
            vec![("RecoveryInstanceId", "mqtt-cn-bbb")],
            "InstanceId",
        ),
        (
            RECOVERY,
            vec![("InstanceId", "mqtt-cn-aaa")],
            "RecoveryInstanceId",
        ),
    ];
    for (action, form, missing) in cases {
        let reply = server.send(&server.acs3(&root_key(), action, &form)).await;

        assert_error(&reply, 400, &format!("InvalidParameter.{missing}"));
        assert!(
            reply.message().contains(&format!("{missing} is missing")),
            "{action}: {}",
            reply.message()
        );
    }
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn malformed_instance_ids_are_rejected() {
    let server = TestServer::start().await;
    let too_long = "m".repeat(65);
    for bad in ["", "mqtt cn", "mqtt/cn", "mqtt.cn", too_long.as_str()] {
        let form = downgrade_form("mqtt-cn-aaa", bad);

        let reply = server
            .send(&server.acs3(&root_key(), DOWNGRADE, &form))
            .await;

        assert_error(&reply, 400, "InvalidParameter.DowngradeInstanceId");
        assert!(reply.message().contains("1 to 64 characters"), "{bad:?}");
    }
    let form = recovery_form("mqtt-cn-aaa", "bad id");
    let reply = server
        .send(&server.acs3(&root_key(), RECOVERY, &form))
        .await;
    assert_error(&reply, 400, "InvalidParameter.RecoveryInstanceId");
    assert!(reply.message().contains("\"bad id\""));
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn max_length_instance_id_is_accepted() {
    let server = TestServer::start().await;
    let longest = "m".repeat(64);
    let form = downgrade_form("mqtt-cn-aaa", &longest);

    let reply = server
        .send(&server.acs3(&root_key(), DOWNGRADE, &form))
        .await;

    assert_operation_success(&reply);
}

#[tokio::test]
async fn ram_user_with_allow_succeeds() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("operator"), DOWNGRADE, &form))
        .await;

    assert_operation_success(&reply);
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].ctx.caller.principal,
        Principal::RamUser("operator".to_owned())
    );
    assert_eq!(calls[0].ctx.caller.access_key_id, "LTAIoperator");
}

#[tokio::test]
async fn ram_user_without_policy_is_denied() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("viewer"), DOWNGRADE, &form))
        .await;

    assert_error(&reply, 403, "NoPermission");
    assert_eq!(
        reply.fields(),
        vec![
            "AccessDeniedDetail",
            "Code",
            "HostId",
            "Message",
            "Recommend",
            "RequestId"
        ]
    );
    let detail = &reply.body["AccessDeniedDetail"];
    assert_eq!(
        detail["AuthAction"],
        serde_json::json!("mq:DisasterDowngrade")
    );
    assert_eq!(detail["AuthPrincipalType"], serde_json::json!("SubUser"));
    assert_eq!(
        detail["AuthPrincipalDisplayName"],
        serde_json::json!("viewer")
    );
    assert_eq!(
        detail["AuthPrincipalOwnerId"],
        serde_json::json!(ACCOUNT_ID)
    );
    assert_eq!(
        detail["NoPermissionType"],
        serde_json::json!("ImplicitDeny")
    );
    assert_eq!(
        detail["PolicyType"],
        serde_json::json!("AccountLevelIdentityBasedPolicy")
    );
    assert!(detail["EncodedDiagnosticMessage"].is_string());
    let message = reply.message();
    assert!(message.contains("mq:DisasterDowngrade"), "{message}");
    assert!(
        message.contains(&format!("acs:mq:*:{ACCOUNT_ID}:mqtt-cn-aaa")),
        "{message}"
    );
    assert!(message.contains("RAM policy"), "{message}");
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn ram_allow_must_cover_both_instances() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("restricted"), DOWNGRADE, &form))
        .await;

    assert_error(&reply, 403, "NoPermission");
    assert_eq!(
        reply.body["AccessDeniedDetail"]["NoPermissionType"],
        serde_json::json!("ImplicitDeny")
    );
    assert!(reply.message().contains("mqtt-cn-bbb"));
}

#[tokio::test]
async fn ram_explicit_deny_wins() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("denied"), DOWNGRADE, &form))
        .await;

    assert_error(&reply, 403, "NoPermission");
    assert_eq!(
        reply.body["AccessDeniedDetail"]["NoPermissionType"],
        serde_json::json!("ExplicitDeny")
    );
    assert!(reply.message().contains("mqtt-cn-bbb"));

    // The Deny statement names only mq:DisasterDowngrade, so recovery is allowed.
    let form = recovery_form("mqtt-cn-aaa", "mqtt-cn-bbb");
    let reply = server
        .send(&server.acs3(&user_key("denied"), RECOVERY, &form))
        .await;
    assert_operation_success(&reply);
}

#[tokio::test]
async fn ram_action_is_per_operation() {
    let server = TestServer::start().await;
    let form = recovery_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("downgrader"), RECOVERY, &form))
        .await;

    assert_error(&reply, 403, "NoPermission");
    assert_eq!(
        reply.body["AccessDeniedDetail"]["AuthAction"],
        serde_json::json!("mq:DisasterRecovery")
    );
}

#[tokio::test]
async fn ram_region_comes_from_backend() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    // Unknown regions match the policy's region segment.
    let reply = server
        .send(&server.acs3(&user_key("hangzhou"), DOWNGRADE, &form))
        .await;
    assert_operation_success(&reply);

    server.backend.set_region("mqtt-cn-aaa", "cn-hangzhou");
    server.backend.set_region("mqtt-cn-bbb", "cn-shanghai");
    let reply = server
        .send(&server.acs3(&user_key("hangzhou"), DOWNGRADE, &form))
        .await;
    assert_error(&reply, 403, "NoPermission");
    assert!(
        reply
            .message()
            .contains(&format!("acs:mq:cn-shanghai:{ACCOUNT_ID}:mqtt-cn-bbb")),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn malformed_parameter_wins_over_ram_denial() {
    let server = TestServer::start().await;
    let form = downgrade_form("mqtt-cn-aaa", "not valid");

    let reply = server
        .send(&server.acs3(&user_key("viewer"), DOWNGRADE, &form))
        .await;

    assert_error(&reply, 400, "InvalidParameter.DowngradeInstanceId");
}

#[tokio::test]
async fn ram_denial_wins_over_backend_error() {
    let server = TestServer::start().await;
    server
        .backend
        .fail_with(ServiceError::InstancePermissionCheckFailed {
            message: "not reached".to_owned(),
        });
    let form = downgrade_form("mqtt-cn-aaa", "mqtt-cn-bbb");

    let reply = server
        .send(&server.acs3(&user_key("viewer"), DOWNGRADE, &form))
        .await;

    assert_error(&reply, 403, "NoPermission");
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn service_errors_map_to_status_and_code() {
    let server = TestServer::start().await;
    let cases = [
        (
            ServiceError::InstancePermissionCheckFailed {
                message: "Instance mqtt-cn-bbb does not exist in account 1000000000000001."
                    .to_owned(),
            },
            400,
            "InstancePermissionCheckFailed",
        ),
        (
            ServiceError::ApiNotSupport {
                message: "Instance mqtt-cn-bbb is professional, not platinum.".to_owned(),
            },
            404,
            "ApiNotSupport",
        ),
        (
            ServiceError::InvalidParameter {
                name: "DowngradeInstanceId".to_owned(),
                message: "mqtt-cn-bbb is the last member with access.".to_owned(),
            },
            400,
            "InvalidParameter.DowngradeInstanceId",
        ),
        (
            ServiceError::Internal {
                message: "The state could not be stored; nothing changed.".to_owned(),
            },
            500,
            "InternalError",
        ),
    ];
    for (error, status, code) in cases {
        let expected_message = match &error {
            ServiceError::InvalidParameter { message, .. }
            | ServiceError::InstancePermissionCheckFailed { message }
            | ServiceError::ApiNotSupport { message }
            | ServiceError::Internal { message }
            | ServiceError::InstanceNotFound { message }
            | ServiceError::GroupIdAlreadyExists { message }
            | ServiceError::ParameterFieldCheckFailed { message } => message.clone(),
        };
        server.backend.fail_with(error);
        for (action, target_name) in [
            (DOWNGRADE, "DowngradeInstanceId"),
            (RECOVERY, "RecoveryInstanceId"),
        ] {
            let form = [("InstanceId", "mqtt-cn-aaa"), (target_name, "mqtt-cn-bbb")];

            let reply = server.send(&server.acs3(&root_key(), action, &form)).await;

            assert_error(&reply, status, code);
            assert_eq!(reply.message(), expected_message);
            assert_eq!(reply.body.get("AccessDeniedDetail"), None);
            assert_eq!(reply.body["HostId"], serde_json::json!(server.host()));
        }
    }
    assert_eq!(server.backend.calls().len(), 8);
}
