//! Signature verification over real HTTP: both schemes, the timestamp window, nonce replay
//! and every signature error code.

mod common;

use common::{
    DOWNGRADE_FORM, NOW, TestServer, assert_error, assert_success, edit_query, header,
    legacy_params, next_nonce, query_only_v1, root_key, set_header,
};
use switchyard_api::client::{ApiCall, SignedRequest, build_acs3_request};
use switchyard_api::{AccessKey, ApiSettings, signature_v3};
use time::Duration;

/// Recomputes the ACS3 string to sign of a request built by the crate's client.
fn acs3_string_to_sign(request: &SignedRequest) -> String {
    let mut headers: Vec<&(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| name != "authorization")
        .collect();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| signature_v3::canonical_header_line(name, [value.as_str()]))
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let canonical = signature_v3::canonical_request(
        &request.method,
        "/",
        "",
        &canonical_headers,
        &signed.join(";"),
        &signature_v3::hex_sha256(&request.body),
    );
    signature_v3::string_to_sign(&canonical)
}

#[tokio::test]
async fn hmac_sha1_missing_common_parameters() {
    let server = TestServer::start().await;
    let names = [
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "Timestamp",
        "SignatureNonce",
    ];
    for name in names {
        let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
        request.path_and_query = edit_query(&request.path_and_query, name, None);

        let reply = server.send(&request).await;

        assert_error(&reply, 400, &format!("Missing{name}"));
        assert_eq!(
            reply.message(),
            format!("{name} is mandatory for this action.")
        );
    }
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn hmac_sha1_requires_signed_action() {
    let server = TestServer::start().await;
    let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.path_and_query = edit_query(&request.path_and_query, "Action", None);
    request
        .headers
        .push(("x-acs-action".to_owned(), "DisasterDowngrade".to_owned()));

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "MissingAction");
    assert!(
        reply
            .message()
            .starts_with("Action is mandatory for this action.")
    );
}

#[tokio::test]
async fn hmac_sha1_method_and_version_checked() {
    let server = TestServer::start().await;
    let cases = [
        ("SignatureMethod", "HMAC-SHA256", "InvalidSignatureMethod"),
        ("SignatureVersion", "2.0", "InvalidSignatureVersion"),
    ];
    for (name, value, code) in cases {
        let mut params = legacy_params(&next_nonce());
        for (candidate, current) in params.iter_mut() {
            if *candidate == name {
                *current = value.to_owned();
            }
        }
        let (request, _) = query_only_v1(&server, "POST", &params, "LTAIroot-secret");

        let reply = server.send(&request).await;

        assert_error(&reply, 400, code);
        assert!(reply.message().contains(value));
    }
}

#[tokio::test]
async fn malformed_timestamp_both_schemes() {
    let server = TestServer::start().await;

    let mut request = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.path_and_query = edit_query(
        &request.path_and_query,
        "Timestamp",
        Some("2025/01/01 00:00"),
    );
    let reply = server.send(&request).await;
    assert_error(&reply, 400, "InvalidTimeStamp.Format");
    assert!(reply.message().contains("\"2025/01/01 00:00\""));

    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    set_header(
        &mut request,
        "x-acs-date",
        Some("Wed, 01 Jan 2025 00:00:00 GMT"),
    );
    let reply = server.send(&request).await;
    assert_error(&reply, 400, "InvalidTimeStamp.Format");
    assert!(reply.message().contains("x-acs-date"));
}

#[tokio::test]
async fn expired_timestamp_both_directions() {
    let server = TestServer::start().await;
    for offset in [Duration::minutes(16), Duration::minutes(-16)] {
        server.clock.set(NOW + offset);
        let v1 = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
        let v3 = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
        for request in [v1, v3] {
            let reply = server.send(&request).await;
            assert_error(&reply, 400, "InvalidTimeStamp.Expired");
            assert!(reply.message().contains("2025-01-01T00:00:00Z"));
        }
    }

    server.clock.set(NOW + Duration::minutes(15));
    let reply = server
        .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;
    assert_success(&reply);
}

#[tokio::test]
async fn unknown_access_key_both_schemes() {
    let server = TestServer::start().await;
    let unknown = AccessKey {
        id: "LTAInobody".to_owned(),
        secret: "x".to_owned(),
    };
    let v1 = server.hmac(&unknown, "DisasterDowngrade", DOWNGRADE_FORM);
    let v3 = server.acs3(&unknown, "DisasterDowngrade", DOWNGRADE_FORM);
    for request in [v1, v3] {
        let reply = server.send(&request).await;
        assert_error(&reply, 404, "InvalidAccessKeyId.NotFound");
        assert!(reply.message().contains("\"LTAInobody\""));
    }
}

#[tokio::test]
async fn hmac_sha1_wrong_secret_reports_string_to_sign() {
    let server = TestServer::start().await;
    let params = legacy_params(&next_nonce());
    let (request, client_string_to_sign) = query_only_v1(&server, "POST", &params, "wrong");

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "SignatureDoesNotMatch");
    assert_eq!(
        reply.message(),
        format!(
            "Specified signature is not matched with our calculation. server string to sign \
             is:{client_string_to_sign}"
        )
    );
    // The legacy SDK compares the part after the first ':' with its own string to sign.
    assert_eq!(
        reply.message().split(':').nth(1),
        Some(client_string_to_sign.as_str())
    );
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn acs3_wrong_secret_reports_string_to_sign() {
    let server = TestServer::start().await;
    let wrong = AccessKey {
        id: "LTAIroot".to_owned(),
        secret: "wrong".to_owned(),
    };
    let request = server.acs3(&wrong, "DisasterDowngrade", DOWNGRADE_FORM);

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "SignatureDoesNotMatch");
    let expected = acs3_string_to_sign(&request);
    assert_eq!(
        reply.message(),
        format!(
            "Specified signature is not matched with our calculation. server string to sign \
             is:{expected}"
        )
    );
}

#[tokio::test]
async fn acs3_tampered_body_is_rejected() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    request.body = b"DowngradeInstanceId=mqtt-cn-aaa&InstanceId=mqtt-cn-aaa".to_vec();

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "XAcsContentSha256Mismatch");
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn acs3_tampered_header_fails_signature() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    set_header(&mut request, "accept", Some("application/xml"));

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn acs3_incomplete_signatures() {
    let server = TestServer::start().await;
    let base = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let authorization = header(&base, "authorization").to_owned();
    let signature_field = authorization
        .rsplit_once(",Signature=")
        .map(|(head, _)| head.to_owned())
        .unwrap_or_default();

    let without_signature = {
        let mut request = base.clone();
        set_header(&mut request, "authorization", Some(&signature_field));
        request
    };
    let without_host = {
        let mut request = base.clone();
        let edited = authorization.replace("host;", "");
        set_header(&mut request, "authorization", Some(&edited));
        request
    };
    let unsigned_acs_header = {
        let mut request = base.clone();
        request
            .headers
            .push(("x-acs-extra".to_owned(), "1".to_owned()));
        request
    };
    let signed_header_absent = {
        let mut request = base.clone();
        set_header(&mut request, "accept", None);
        request
    };
    let missing_date = {
        let mut request = base.clone();
        set_header(&mut request, "x-acs-date", None);
        let edited = authorization.replace("x-acs-date;", "");
        set_header(&mut request, "authorization", Some(&edited));
        request
    };
    let cases = [
        ("without Signature", without_signature, "Signature"),
        ("without host", without_host, "host"),
        ("unsigned x-acs header", unsigned_acs_header, "x-acs-extra"),
        ("signed header absent", signed_header_absent, "accept"),
        ("missing x-acs-date", missing_date, "x-acs-date"),
    ];
    for (case, request, named) in cases {
        let reply = server.send(&request).await;
        assert_error(&reply, 400, "IncompleteSignature");
        assert!(
            reply.message().contains(named),
            "{case}: {}",
            reply.message()
        );
    }
}

#[tokio::test]
async fn acs3_other_algorithm_is_rejected() {
    let server = TestServer::start().await;
    let mut request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let edited = header(&request, "authorization").replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3");
    set_header(&mut request, "authorization", Some(&edited));

    let reply = server.send(&request).await;

    assert_error(&reply, 400, "InvalidSignatureMethod");
    assert!(reply.message().contains("ACS3-HMAC-SM3"));
}

#[tokio::test]
async fn replayed_nonce_is_rejected() {
    let server = TestServer::start().await;
    let v1 = server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let v3 = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    for request in [v1, v3] {
        assert_success(&server.send(&request).await);

        let replay = server.send(&request).await;

        assert_error(&replay, 400, "SignatureNonceUsed");
    }
    assert_eq!(server.backend.calls().len(), 2);
}

#[tokio::test]
async fn nonce_is_scoped_per_access_key() {
    let server = TestServer::start().await;
    let host = server.host();
    let nonce = next_nonce();
    for key in [root_key(), common::user_key("operator")] {
        let request = build_acs3_request(
            &key,
            &ApiCall {
                method: "POST",
                host: &host,
                action: "DisasterDowngrade",
                query: &[],
                form: DOWNGRADE_FORM,
                time: NOW,
                nonce: &nonce,
            },
        );
        assert_success(&server.send(&request).await);
    }
}

#[tokio::test]
async fn full_nonce_cache_is_unavailable() {
    let settings = ApiSettings {
        nonce_cache_capacity: 1,
        ..ApiSettings::default()
    };
    let server = TestServer::with_settings(settings).await;
    assert_success(
        &server
            .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
            .await,
    );

    let reply = server
        .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;

    assert_error(&reply, 503, "ServiceUnavailable");
    assert!(reply.message().contains("nonce_cache_capacity"));
}

#[tokio::test]
async fn raw_request_without_signature() {
    let server = TestServer::start().await;
    let raw = format!(
        "POST /?Action=DisasterDowngrade&Version=2020-04-20 HTTP/1.1\r\nhost: {}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: 0\r\n\
         connection: close\r\n\r\n",
        server.host()
    );

    let reply = server.send_raw(raw.as_bytes()).await;

    assert_error(&reply, 400, "MissingAccessKeyId");
}
