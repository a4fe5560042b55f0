//! Error codes the gateway and the actions return, and the JSON error body.
//!
//! Every error is an HTTP 4xx or 5xx response with `content-type: application/json` and the body
//! `{"RequestId","HostId","Code","Message","Recommend"}`, plus `AccessDeniedDetail` on a RAM
//! denial. The SDKs raise an exception for any status from 400 to 599 and read `Code` and
//! `Message` from this body, and they treat the `x-acs-retry-after` header (milliseconds) as a
//! throttling signal, so only `Throttling.User` sets it.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::backend::ServiceError;
use crate::encoding::{ParamError, quote_value};
use crate::ram::{AccessDeniedDetail, Denial};

/// Header carrying the request id on every response.
pub(crate) const REQUEST_ID_HEADER: &str = "x-acs-request-id";
/// Header carrying, on `Throttling.User` only, the milliseconds to wait before retrying.
pub(crate) const RETRY_AFTER_HEADER: &str = "x-acs-retry-after";

/// A failed request: status, code, message and the extra parts some codes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) access_denied: Option<Box<AccessDeniedDetail>>,
    /// The `Allow` header value, set only for `UnsupportedHTTPMethod`.
    pub(crate) allow: Option<&'static str>,
    /// The `Connection: close` flag, set when unread request bytes make the connection
    /// unusable.
    pub(crate) close_connection: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: impl Into<String>, message: String) -> Self {
        Self {
            status,
            code: code.into(),
            message,
            retry_after_ms: None,
            access_denied: None,
            allow: None,
            close_connection: false,
        }
    }

    fn bad_request(code: impl Into<String>, message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unsupported_method(method: &str) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHTTPMethod",
            format!(
                "The HTTP method {} is not supported. Send OnsMqtt requests with GET or POST.",
                quote_value(method)
            ),
        );
        error.allow = Some("GET, POST");
        error
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        // NOTE: the cloud documents no code for an oversized body, so this one is Switchyard's own.
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!(
                "The request body is larger than {limit} bytes, the max_body_bytes setting of \
                 this server. Send a smaller body or raise the setting."
            ),
        )
    }

    pub(crate) fn body_unreadable() -> Self {
        Self::bad_request(
            "InvalidRequestBody",
            "The request body could not be read to its end. Resend the request.".to_owned(),
        )
    }

    /// 408 for a body that did not arrive within `request_timeout`. The status is a 4xx
    /// rather than a 5xx because the client did not send its request in time.
    pub(crate) fn request_timeout(limit: Duration) -> Self {
        // NOTE: the cloud documents no code for a slow body, so this one is Switchyard's own.
        let mut error = Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "The request body did not arrive within {} ms, the request_timeout setting of \
                 this server. Send the whole body without pausing, or raise the setting.",
                limit.as_millis()
            ),
        );
        error.close_connection = true;
        error
    }

    /// 503 `ServiceUnavailable`, the cloud's common code for a temporary server failure, for a
    /// request not handled within `request_timeout` after its body arrived.
    pub(crate) fn handling_timeout(limit: Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "The server stopped waiting for this request after {} ms, its request_timeout \
                 setting. The change may still take effect. DisasterDowngrade and \
                 DisasterRecovery succeed without change when repeated, so retry the request. \
                 A repeated CreateGroupId or DeleteGroupId fails if the first one took effect, \
                 so check with ListGroupId first.",
                limit.as_millis()
            ),
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "The request body has content type {}. OnsMqtt parameters in a body must be \
                 sent as application/x-www-form-urlencoded.",
                quote_value(content_type)
            ),
        )
    }

    pub(crate) fn invalid_params(error: &ParamError) -> Self {
        let code = match error {
            ParamError::Duplicate { name } => format!("InvalidParameter.{name}"),
            ParamError::InvalidUtf8 { .. } | ParamError::InvalidName { .. } => {
                "InvalidParameter".to_owned()
            }
        };
        Self::bad_request(code, error.message())
    }

    /// `InvalidParameter.<name>` for a parameter that is missing or malformed.
    pub(crate) fn invalid_parameter(name: &str, message: String) -> Self {
        Self::bad_request(format!("InvalidParameter.{name}"), message)
    }

    /// `ParameterFieldCheckFailed`, the code the Group ID actions use for a missing or
    /// malformed parameter.
    pub(crate) fn parameter_field_check_failed(message: String) -> Self {
        Self::bad_request("ParameterFieldCheckFailed", message)
    }

    /// `Missing<name>` for a missing common parameter, with the cloud's message plus `hint`.
    pub(crate) fn missing(name: &str, hint: &str) -> Self {
        let mut message = format!("{name} is mandatory for this action.");
        if !hint.is_empty() {
            message.push(' ');
            message.push_str(hint);
        }
        Self::bad_request(format!("Missing{name}"), message)
    }

    pub(crate) fn invalid_version(version: &str) -> Self {
        Self::bad_request(
            "InvalidVersion",
            format!(
                "Specified parameter Version is not valid. The version {} is not served; \
                 OnsMqtt is served at version {}.",
                quote_value(version),
                crate::gateway::API_VERSION
            ),
        )
    }

    pub(crate) fn api_not_found(action: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidApi.NotFound",
            format!(
                "Specified api is not found, please check your url and method. The action {} \
                 is not an OnsMqtt {} action this server implements.",
                quote_value(action),
                crate::gateway::API_VERSION
            ),
        )
    }

    pub(crate) fn incomplete_signature(detail: &str) -> Self {
        Self::bad_request(
            "IncompleteSignature",
            format!("The request signature is incomplete: {detail}."),
        )
    }

    pub(crate) fn invalid_signature_method(method: &str, expected: &str) -> Self {
        Self::bad_request(
            "InvalidSignatureMethod",
            format!(
                "The signature method {} is not supported. Sign the request with {expected}.",
                quote_value(method)
            ),
        )
    }

    pub(crate) fn invalid_signature_version(version: &str) -> Self {
        Self::bad_request(
            "InvalidSignatureVersion",
            format!(
                "The signature version {} is not supported. Send SignatureVersion=1.0.",
                quote_value(version)
            ),
        )
    }

    pub(crate) fn timestamp_format(name: &str, value: &str) -> Self {
        Self::bad_request(
            "InvalidTimeStamp.Format",
            format!(
                "The {name} value {} is not a valid time. Send the UTC time in ISO 8601 form \
                 YYYY-MM-DDThh:mm:ssZ, for example 2025-01-01T00:00:00Z.",
                quote_value(value)
            ),
        )
    }

    pub(crate) fn timestamp_expired(value: &str, server_time: &str, window_minutes: i64) -> Self {
        Self::bad_request(
            "InvalidTimeStamp.Expired",
            format!(
                "Specified time stamp or date value is expired. The request time {} differs \
                 from the server time {server_time} by more than {window_minutes} minutes; \
                 synchronize the client clock and send the current UTC time.",
                quote_value(value)
            ),
        )
    }

    pub(crate) fn access_key_not_found(access_key_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            format!(
                "Specified access key is not found. The AccessKey ID {} does not exist on this \
                 server; check the AccessKey ID the client is configured with.",
                quote_value(access_key_id)
            ),
        )
    }

    /// `SignatureDoesNotMatch`. The message must stay exactly this prefix plus the server's
    /// string to sign, because the legacy Python SDK splits it at `:` and compares the second
    /// part with its own string to sign.
    pub(crate) fn signature_mismatch(server_string_to_sign: &str) -> Self {
        Self::bad_request(
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to \
                 sign is:{server_string_to_sign}"
            ),
        )
    }

    pub(crate) fn content_sha256_mismatch(claimed: &str, computed: &str) -> Self {
        // NOTE: the cloud documents no code for this case, so this one is Switchyard's own.
        Self::bad_request(
            "XAcsContentSha256Mismatch",
            format!(
                "The x-acs-content-sha256 header {} does not match the SHA-256 of the request \
                 body, {computed}. Hash exactly the bytes sent, as lowercase hex.",
                quote_value(claimed)
            ),
        )
    }

    pub(crate) fn nonce_used(nonce: &str) -> Self {
        Self::bad_request(
            "SignatureNonceUsed",
            format!(
                "Specified signature nonce was used already. The nonce {} was already used \
                 with this AccessKey within the timestamp window; send a new unique nonce with \
                 every request.",
                quote_value(nonce)
            ),
        )
    }

    pub(crate) fn nonce_cache_full(capacity: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "The server is remembering {capacity} signature nonces, the \
                 nonce_cache_capacity setting, and cannot accept more until some expire. Retry \
                 later, or raise the setting."
            ),
        )
    }

    pub(crate) fn throttled(retry_after_ms: u64) -> Self {
        let mut error = Self::bad_request(
            "Throttling.User",
            "Request was denied due to user flow control.".to_owned(),
        );
        error.retry_after_ms = Some(retry_after_ms);
        error
    }

    pub(crate) fn no_permission(denial: &Denial) -> Self {
        let mut error = Self::new(StatusCode::FORBIDDEN, "NoPermission", denial.message());
        error.access_denied = Some(Box::new(denial.detail()));
        error
    }

    pub(crate) fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// Maps a backend failure to its status and code.
    pub(crate) fn from_service(error: ServiceError) -> Self {
        match error {
            ServiceError::InvalidParameter { name, message } => {
                Self::invalid_parameter(&name, message)
            }
            ServiceError::InstancePermissionCheckFailed { message } => {
                Self::bad_request("InstancePermissionCheckFailed", message)
            }
            ServiceError::ApiNotSupport { message } => {
                Self::new(StatusCode::NOT_FOUND, "ApiNotSupport", message)
            }
            ServiceError::Internal { message } => Self::internal(message),
            ServiceError::InstanceNotFound { message } => {
                Self::bad_request("InstanceNotFound", message)
            }
            // The cloud's code, misspelling included, because clients compare it verbatim.
            ServiceError::GroupIdAlreadyExists { message } => {
                Self::bad_request("GroupIdAlreadyExsited", message)
            }
            ServiceError::ParameterFieldCheckFailed { message } => {
                Self::parameter_field_check_failed(message)
            }
        }
    }

    /// Builds the HTTP response. `host_id` is the request's `Host` header.
    pub(crate) fn into_response(self, request_id: &str, host_id: &str) -> Response {
        let body = ErrorBody {
            request_id,
            host_id,
            code: &self.code,
            message: &self.message,
            recommend: format!(
                "https://api.alibabacloud.com/troubleshoot?q={}&product=OnsMqtt&requestId={request_id}",
                crate::encoding::percent_encode(&self.code)
            ),
            access_denied_detail: self.access_denied.as_deref(),
        };
        let mut response = json_response(self.status, &body, request_id);
        let headers = response.headers_mut();
        if let Some(retry_after_ms) = self.retry_after_ms {
            headers.insert(
                HeaderName::from_static(RETRY_AFTER_HEADER),
                HeaderValue::from(retry_after_ms),
            );
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: &'a str,
    message: &'a str,
    recommend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_denied_detail: Option<&'a AccessDeniedDetail>,
}

/// Serializes `body` as a JSON response with the request id header.
fn json_response(status: StatusCode, body: &impl Serialize, request_id: &str) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes_response(status, bytes, request_id),
        Err(error) => {
            tracing::error!(request_id, %error, "failed to serialize an error body");
            let fallback =
                br#"{"Code":"InternalError","Message":"The error body could not be serialized."}"#;
            json_bytes_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                fallback.to_vec(),
                request_id,
            )
        }
    }
}

/// Builds a response from JSON text, with the request id header.
pub(crate) fn json_bytes_response(
    status: StatusCode,
    bytes: Vec<u8>,
    request_id: &str,
) -> Response {
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_mismatch_message_splits_like_legacy_sdk() {
        let error = ApiError::signature_mismatch("POST&%2F&A%3D1");
        let second_part = error.message.split(':').nth(1);
        assert_eq!(second_part, Some("POST&%2F&A%3D1"));
        assert_eq!(
            error.message,
            "Specified signature is not matched with our calculation. server string to sign \
             is:POST&%2F&A%3D1"
        );
    }

    #[test]
    fn service_errors_map_to_codes() {
        let cases = [
            (
                ServiceError::InvalidParameter {
                    name: "DowngradeInstanceId".to_owned(),
                    message: "m".to_owned(),
                },
                StatusCode::BAD_REQUEST,
                "InvalidParameter.DowngradeInstanceId",
            ),
            (
                ServiceError::InstancePermissionCheckFailed {
                    message: "m".to_owned(),
                },
                StatusCode::BAD_REQUEST,
                "InstancePermissionCheckFailed",
            ),
            (
                ServiceError::ApiNotSupport {
                    message: "m".to_owned(),
                },
                StatusCode::NOT_FOUND,
                "ApiNotSupport",
            ),
            (
                ServiceError::Internal {
                    message: "m".to_owned(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
            ),
            (
                ServiceError::InstanceNotFound {
                    message: "m".to_owned(),
                },
                StatusCode::BAD_REQUEST,
                "InstanceNotFound",
            ),
            (
                ServiceError::GroupIdAlreadyExists {
                    message: "m".to_owned(),
                },
                StatusCode::BAD_REQUEST,
                "GroupIdAlreadyExsited",
            ),
            (
                ServiceError::ParameterFieldCheckFailed {
                    message: "m".to_owned(),
                },
                StatusCode::BAD_REQUEST,
                "ParameterFieldCheckFailed",
            ),
        ];
        for (service_error, status, code) in cases {
            let error = ApiError::from_service(service_error);
            assert_eq!(error.status, status);
            assert_eq!(error.code, code);
            assert_eq!(error.message, "m");
        }
    }

    #[test]
    fn missing_message_follows_cloud_form() {
        let error = ApiError::missing("Timestamp", "");
        assert_eq!(error.code, "MissingTimestamp");
        assert_eq!(error.message, "Timestamp is mandatory for this action.");
    }
}
