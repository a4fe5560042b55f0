//! Client-side request builders for Switchyard's load generator and tests. They sign with the
//! same canonicalization code the gateway verifies with, and lay parameters out as the official
//! SDKs do.

use time::OffsetDateTime;

use crate::account::AccessKey;
use crate::clock::format_utc;
use crate::encoding::percent_encode;
use crate::signature_v1;
use crate::signature_v3::{Acs3Request, hex_sha256, sign_acs3};

/// The content type of a form body.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A signed request, ready to write to an HTTP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    pub method: String,
    /// `/` followed, when there are query parameters, by `?` and the encoded query string.
    pub path_and_query: String,
    /// Header names and values, `host` included and `Authorization` too for ACS3.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One OnsMqtt call to sign.
#[derive(Clone, Copy, Debug)]
pub struct ApiCall<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The `host` header value, such as `127.0.0.1:18080`.
    pub host: &'a str,
    pub action: &'a str,
    /// Parameters sent in the query string.
    pub query: &'a [(&'a str, &'a str)],
    /// Parameters sent as a form body; empty for no body.
    pub form: &'a [(&'a str, &'a str)],
    /// Signing time, sent as `x-acs-date` or `Timestamp`.
    pub time: OffsetDateTime,
    /// A value unique per request, such as 32 random hex digits.
    pub nonce: &'a str,
}

/// Encodes parameters as `name=value` pairs joined by `&`, RFC 3986 encoded.
pub fn encode_params(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn path_and_query(query: &str) -> String {
    if query.is_empty() {
        "/".to_owned()
    } else {
        format!("/?{query}")
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// Builds an `ACS3-HMAC-SHA256` request as the current SDKs send it: `Action` and `Version` only
/// in the `x-acs-action` and `x-acs-version` headers, every header signed.
pub fn build_acs3_request(key: &AccessKey, call: &ApiCall<'_>) -> SignedRequest {
    let body = encode_params(call.form).into_bytes();
    let mut headers = vec![
        ("host".to_owned(), call.host.to_owned()),
        ("x-acs-action".to_owned(), call.action.to_owned()),
        (
            "x-acs-version".to_owned(),
            crate::gateway::API_VERSION.to_owned(),
        ),
        ("x-acs-date".to_owned(), format_utc(call.time)),
        ("x-acs-signature-nonce".to_owned(), call.nonce.to_owned()),
        ("x-acs-content-sha256".to_owned(), hex_sha256(&body)),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    if !body.is_empty() {
        headers.push(("content-type".to_owned(), FORM_CONTENT_TYPE.to_owned()));
    }
    let query = owned(call.query);
    let authorization = sign_acs3(
        &key.id,
        &key.secret,
        &Acs3Request {
            method: call.method,
            path: "/",
            query: &query,
            headers: &headers,
            body: &body,
        },
    );
    headers.push(("authorization".to_owned(), authorization));
    SignedRequest {
        method: call.method.to_owned(),
        path_and_query: path_and_query(&encode_params(call.query)),
        headers,
        body,
    }
}

/// Builds an HMAC-SHA1 request: the common parameters and `Signature` in the query string, the
/// call's form parameters in the body, both signed together.
pub fn build_hmac_sha1_request(key: &AccessKey, call: &ApiCall<'_>) -> SignedRequest {
    let timestamp = format_utc(call.time);
    let mut query: Vec<(&str, &str)> = vec![
        ("AccessKeyId", key.id.as_str()),
        ("Action", call.action),
        ("Format", "JSON"),
        ("SignatureMethod", signature_v1::SIGNATURE_METHOD),
        ("SignatureNonce", call.nonce),
        ("SignatureVersion", signature_v1::SIGNATURE_VERSION),
        ("Timestamp", timestamp.as_str()),
        ("Version", crate::gateway::API_VERSION),
    ];
    query.extend_from_slice(call.query);
    let string_to_sign =
        signature_v1::string_to_sign(call.method, query.iter().chain(call.form).copied());
    let signature = signature_v1::sign(&key.secret, &string_to_sign);
    query.push(("Signature", signature.as_str()));

    let body = encode_params(call.form).into_bytes();
    let mut headers = vec![
        ("host".to_owned(), call.host.to_owned()),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    if !body.is_empty() {
        headers.push(("content-type".to_owned(), FORM_CONTENT_TYPE.to_owned()));
    }
    SignedRequest {
        method: call.method.to_owned(),
        path_and_query: path_and_query(&encode_params(&query)),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn test_key() -> AccessKey {
        AccessKey {
            id: "testid".to_owned(),
            secret: "testsecret".to_owned(),
        }
    }

    #[test]
    fn acs3_request_reproduces_vector() {
        let call = ApiCall {
            method: "POST",
            host: "onsmqtt.cn-hangzhou.aliyuncs.com",
            action: "DisasterDowngrade",
            query: &[],
            form: &[
                ("DowngradeInstanceId", "mqtt-cn-bbb"),
                ("InstanceId", "mqtt-cn-aaa"),
            ],
            time: datetime!(2025-01-01 00:00:00 UTC),
            nonce: "3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b",
        };
        let request = build_acs3_request(&test_key(), &call);

        assert_eq!(request.path_and_query, "/");
        assert_eq!(
            request.body,
            b"DowngradeInstanceId=mqtt-cn-bbb&InstanceId=mqtt-cn-aaa".to_vec()
        );
        let authorization = request
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, value)| value.as_str());
        assert_eq!(
            authorization.map(|value| value.rsplit("Signature=").next()),
            Some(Some(
                "c0efd3d4efc1a1d996d0f742907bf6d17e0d00bec7a1b0a555b7893c650f25f6"
            ))
        );
    }

    #[test]
    fn hmac_sha1_request_reproduces_vector() {
        let call = ApiCall {
            method: "POST",
            host: "onsmqtt.cn-hangzhou.aliyuncs.com",
            action: "DisasterDowngrade",
            query: &[("RegionId", "cn-hangzhou")],
            form: &[
                ("DowngradeInstanceId", "mqtt-cn-bbb"),
                ("InstanceId", "mqtt-cn-aaa"),
            ],
            time: datetime!(2025-01-01 00:00:00 UTC),
            nonce: "3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b",
        };
        let request = build_hmac_sha1_request(&test_key(), &call);

        assert!(
            request
                .path_and_query
                .ends_with("&Signature=iVF5k%2BXeLgQ5YFSq4rVvNoRZ6yo%3D"),
            "{}",
            request.path_and_query
        );
        assert!(
            request
                .path_and_query
                .contains("Timestamp=2025-01-01T00%3A00%3A00Z")
        );
    }

    #[test]
    fn encode_params_uses_rfc3986() {
        assert_eq!(
            encode_params(&[("A", "x y*"), ("B", "~")]),
            "A=x%20y%2A&B=~"
        );
        assert_eq!(encode_params(&[]), "");
    }
}
