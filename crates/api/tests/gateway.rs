//! Gateway behaviour over real HTTP: the request layouts the SDKs send, parameter parsing,
//! routing, error bodies and throttling.

mod common;

use common::{
    DOWNGRADE_FORM, NOW, TestServer, assert_error, assert_success, legacy_params, next_nonce,
    query_only_v1, root_key, set_header, to_http,
};
use switchyard_api::ApiSettings;
use switchyard_api::client::{ApiCall, build_acs3_request};
use time::Duration;

#[tokio::test]
async fn acs3_form_body_layout_succeeds() {
    let server = TestServer::start().await;
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    assert_eq!(request.path_and_query, "/");

    let reply = server.send(&request).await;

    assert_success(&reply);
    assert_eq!(server.backend.calls().len(), 1);
}

#[tokio::test]
async fn acs3_get_query_layout_succeeds() {
    let server = TestServer::start().await;
    let host = server.host();
    let nonce = next_nonce();
    let request = build_acs3_request(
        &root_key(),
        &ApiCall {
            method: "GET",
            host: &host,
            action: "DisasterRecovery",
            query: &[
                ("InstanceId", "mqtt-cn-aaa"),
                ("RecoveryInstanceId", "mqtt-cn-bbb"),
            ],
            form: &[],
            time: NOW,
            nonce: &nonce,
        },
    );

    let reply = server.send(&request).await;

    assert_success(&reply);
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "recover");
    assert_eq!(calls[0].target_instance_id, "mqtt-cn-bbb");
}

#[tokio::test]
async fn hmac_sha1_form_body_layout_succeeds() {
    let server = TestServer::start().await;
    let request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);

    let reply = server.send(&request).await;

    assert_success(&reply);
    assert_eq!(server.backend.calls().len(), 1);
}

#[tokio::test]
async fn hmac_sha1_legacy_query_layout_succeeds() {
    let server = TestServer::start().await;
    let params = legacy_params(&next_nonce());
    let (request, _) = query_only_v1(&server, "POST", &params, "LTAIroot-secret");
    assert!(request.path_and_query.contains("&SignatureType=&"));

    let reply = server.send(&request).await;

    assert_success(&reply);
    let calls = server.backend.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].instance_id, "mqtt-cn-aaa");
    assert_eq!(calls[0].target_instance_id, "mqtt-cn-bbb");
}

#[tokio::test]
async fn hmac_sha1_get_succeeds() {
    let server = TestServer::start().await;
    let params = legacy_params(&next_nonce());
    let (request, _) = query_only_v1(&server, "GET", &params, "LTAIroot-secret");

    let reply = server.send(&request).await;

    assert_success(&reply);
}

#[tokio::test]
async fn query_plus_decodes_as_space() {
    // The Python SDK form-encodes the query string (space as '+') but signs the raw value.
    let server = TestServer::start().await;
    let host = server.host();
    let nonce = next_nonce();
    let mut request = build_acs3_request(
        &root_key(),
        &ApiCall {
            method: "GET",
            host: &host,
            action: "DisasterDowngrade",
            query: &[
                ("DowngradeInstanceId", "mqtt-cn-bbb"),
                ("InstanceId", "mqtt cn*"),
            ],
            form: &[],
            time: NOW,
            nonce: &nonce,
        },
    );
    request.path_and_query = request
        .path_and_query
        .replace("%20", "+")
        .replace("%2A", "*");

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidParameter.InstanceId");
    assert!(
        reply.message().contains("\"mqtt cn*\""),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn error_body_has_cloud_fields() {
    let server = TestServer::start().await;
    let request = server.acs3(&root_key(), "NoSuchAction", &[]);

    let reply = server.send(&request).await;

    assert_error(&reply, 404, "InvalidApi.NotFound");
    assert_eq!(
        reply.fields(),
        vec!["Code", "HostId", "Message", "Recommend", "RequestId"]
    );
    let request_id = reply.body["RequestId"].as_str().unwrap_or_default();
    assert_eq!(request_id.len(), 36);
    assert_eq!(request_id, request_id.to_ascii_uppercase());
    assert_eq!(request_id.chars().nth(14), Some('4'), "UUID version 4");
    assert_eq!(reply.body["HostId"], serde_json::json!(server.host()));
    assert_eq!(
        reply.body["Recommend"],
        serde_json::json!(format!(
            "https://api.alibabacloud.com/troubleshoot?q=InvalidApi.NotFound&product=OnsMqtt&requestId={request_id}"
        ))
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-acs-request-id"), Some(request_id));
    assert_eq!(reply.header("x-acs-retry-after"), None);
    assert!(reply.message().contains("\"NoSuchAction\""));
}

#[tokio::test]
async fn unsupported_method_is_rejected() {
    let server = TestServer::start().await;
    for method in ["PUT", "DELETE", "PATCH"] {
        let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
        request.method = method.to_owned();

        let reply = server.send(&request).await;

        assert_error(&reply, 405, "UnsupportedHTTPMethod");
        assert_eq!(reply.header("allow"), Some("GET, POST"));
        assert!(reply.message().contains(method));
    }
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn unknown_path_is_not_found() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.path_and_query = "/v1/instances".to_owned();

    let reply = server.send(&request).await;

    assert_error(&reply, 404, "InvalidApi.NotFound");
    assert!(reply.message().contains("/v1/instances"));
}

#[tokio::test]
async fn missing_action_and_version() {
    let server = TestServer::start().await;

    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    set_header(&mut request, "x-acs-action", None);
    let reply = server.send(&request).await;
    assert_error(&reply, 400, "MissingAction");
    assert_eq!(reply.message(), "Action is mandatory for this action.");

    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    set_header(&mut request, "x-acs-version", None);
    let reply = server.send(&request).await;
    assert_error(&reply, 400, "MissingVersion");
    assert_eq!(reply.message(), "Version is mandatory for this action.");
}

#[tokio::test]
async fn other_version_is_invalid() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    set_header(&mut request, "x-acs-version", Some("2019-01-01"));

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidVersion");
    assert!(reply.message().contains("\"2019-01-01\""));
    assert!(reply.message().contains("2020-04-20"));
}

#[tokio::test]
async fn action_header_and_parameter_must_agree() {
    let server = TestServer::start().await;
    let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request
        .headers
        .push(("x-acs-action".to_owned(), "DisasterRecovery".to_owned()));

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidParameter.Action");
}

#[tokio::test]
async fn duplicate_parameter_is_rejected() {
    let server = TestServer::start().await;
    let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.path_and_query.push_str("&InstanceId=mqtt-cn-aaa");

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidParameter.InstanceId");
    assert!(reply.message().contains("more than once"));
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn invalid_parameter_name_is_rejected() {
    let server = TestServer::start().await;
    let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.path_and_query.push_str("&bad%2Fname=1");

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidParameter");
    assert!(reply.message().contains("\"bad/name\""));
}

#[tokio::test]
async fn json_body_is_unsupported_media_type() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", &[]);
    request.body = br#"{"InstanceId":"mqtt-cn-aaa"}"#.to_vec();
    set_header(&mut request, "content-type", Some("application/json"));

    let reply = server.send(&request).await;

    assert_error(&reply, 415, "UnsupportedMediaType");
    assert!(reply.message().contains("application/json"));
}

#[tokio::test]
async fn oversized_body_is_rejected() {
    let settings = ApiSettings {
        max_body_bytes: 64,
        ..ApiSettings::default()
    };
    let server = TestServer::with_settings(settings).await;
    let long_id = "a".repeat(100);
    let form = [("InstanceId", long_id.as_str())];
    let request = server.acs3(&root_key(), "DisasterDowngrade", &form);

    let reply = server.send(&request).await;

    assert_error(&reply, 413, "RequestBodyTooLarge");
    assert!(reply.message().contains("64 bytes"));
}

#[tokio::test]
async fn xml_format_is_rejected() {
    let server = TestServer::start().await;
    let mut params = legacy_params(&next_nonce());
    for (name, value) in params.iter_mut() {
        if *name == "Format" {
            *value = "XML".to_owned();
        }
    }
    let (request, _) = query_only_v1(&server, "POST", &params, "LTAIroot-secret");

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidParameter.Format");
}

#[tokio::test]
async fn throttling_per_access_key() {
    let settings = ApiSettings {
        throttle_rate_per_second: 1,
        throttle_burst: 2,
        ..ApiSettings::default()
    };
    let server = TestServer::with_settings(settings).await;
    for _ in 0..2 {
        let reply = server
            .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
            .await;
        assert_success(&reply);
        assert_eq!(reply.header("x-acs-retry-after"), None);
    }

    let reply = server
        .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;
    assert_error(&reply, 400, "Throttling.User");
    assert_eq!(
        reply.message(),
        "Request was denied due to user flow control."
    );
    assert_eq!(reply.header("x-acs-retry-after"), Some("1000"));

    let other = server
        .send(&server.acs3(
            &common::user_key("operator"),
            "DisasterDowngrade",
            DOWNGRADE_FORM,
        ))
        .await;
    assert_success(&other);

    server.clock.advance(Duration::seconds(1));
    let reply = server
        .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;
    assert_success(&reply);
}

#[tokio::test]
async fn to_http_writes_valid_request() {
    // Checks the harness itself: the bytes `to_http` writes form a request the server accepts.
    let server = TestServer::start().await;
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let bytes = to_http(&request);
    assert!(bytes.starts_with(b"POST / HTTP/1.1\r\n"));

    let reply = server.send_raw(&bytes).await;

    assert_success(&reply);
}
