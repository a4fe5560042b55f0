//! The `/` handler. Every request passes these steps in order, and the first failure is the
//! response.
//!
//! 1. The method is GET or POST (`UnsupportedHTTPMethod`).
//! 2. The body arrives within `request_timeout` (408 `RequestTimeout`), fits `max_body_bytes`
//!    (`RequestBodyTooLarge`) and is a form when not empty (`UnsupportedMediaType`).
//! 3. Query string and form body parse, names unique (`InvalidParameter`).
//! 4. `Action` and `Version` are present, from parameters or `x-acs-*` headers (`MissingAction`,
//!    `MissingVersion`), the version is `2020-04-20` (`InvalidVersion`), the action exists
//!    (`InvalidApi.NotFound`) and `Format`, if sent, is JSON (`InvalidParameter.Format`).
//! 5. The signature verifies (see [`crate::authenticate`]).
//! 6. The AccessKey's token bucket has a token (`Throttling.User`).
//! 7. The nonce is new (`SignatureNonceUsed`) and the nonce cache has room (503
//!    `ServiceUnavailable`).
//! 8. The action handler runs: parameters, then RAM policy, then backend.
//!
//! Steps 3 to 8 must end within what is left of `request_timeout` after the body has arrived,
//! or the request fails with 503 `ServiceUnavailable`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::account::KeyStore;
use crate::actions::{self, ActionOutput, ActionRequest, Services};
use crate::authenticate::{SignedParts, TIMESTAMP_WINDOW, authenticate};
use crate::backend::ActionContext;
use crate::clock::Clock;
use crate::encoding::{ParamSource, Params, parse_urlencoded, quote_value};
use crate::errors::{ApiError, json_bytes_response};
use crate::nonce::{NonceCache, NonceOutcome};
use crate::throttle::Throttle;

/// The only OnsMqtt API version served.
pub(crate) const API_VERSION: &str = "2020-04-20";

/// Shared state of the handler.
pub(crate) struct Gateway {
    pub(crate) keys: KeyStore,
    pub(crate) max_body_bytes: usize,
    /// Time from a complete request head to the response; see [`crate::ApiSettings`].
    pub(crate) request_timeout: Duration,
    pub(crate) nonce_cache_capacity: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) nonces: NonceCache,
    pub(crate) throttle: Throttle,
    pub(crate) services: Services,
}

/// Fields of the request log line besides the outcome.
#[derive(Default)]
struct RequestSummary {
    action: Option<String>,
    access_key_id: Option<String>,
}

/// Handles `ANY /`.
pub(crate) async fn handle(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
    let (parts, body) = request.into_parts();
    let host_id = parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());

    let mut summary = RequestSummary::default();
    let result = gateway
        .process(&request_id, &parts, body, source_ip, &mut summary)
        .await;
    let action = summary.action.as_deref().unwrap_or("-");
    let access_key_id = summary.access_key_id.as_deref().unwrap_or("-");
    match result {
        Ok(output) => {
            tracing::debug!(
                request_id, method = %parts.method, action, access_key_id, status = 200,
                "OnsMqtt request succeeded"
            );
            json_bytes_response(StatusCode::OK, output.body, &request_id)
        }
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(
                    request_id, method = %parts.method, action, access_key_id,
                    status = error.status.as_u16(), code = %error.code, message = %error.message,
                    "OnsMqtt request failed"
                );
            } else {
                tracing::debug!(
                    request_id, method = %parts.method, action, access_key_id,
                    status = error.status.as_u16(), code = %error.code,
                    "OnsMqtt request rejected"
                );
            }
            error.into_response(&request_id, &host_id)
        }
    }
}

/// Handles every path other than `/`.
pub(crate) async fn handle_unknown_path(request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
    let host_id = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = request.uri().path().to_owned();
    tracing::debug!(
        request_id,
        path,
        status = 404,
        "OnsMqtt request to an unknown path"
    );
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidApi.NotFound",
        format!(
            "Specified api is not found, please check your url and method. The path {} is not \
             served; send OnsMqtt requests to /.",
            quote_value(&path)
        ),
    )
    .into_response(&request_id, &host_id)
}

impl Gateway {
    async fn process(
        &self,
        request_id: &str,
        parts: &Parts,
        body: Body,
        source_ip: Option<IpAddr>,
        summary: &mut RequestSummary,
    ) -> Result<ActionOutput, ApiError> {
        if parts.method != Method::GET && parts.method != Method::POST {
            return Err(ApiError::unsupported_method(parts.method.as_str()));
        }
        let started = tokio::time::Instant::now();
        let body = match tokio::time::timeout(self.request_timeout, self.read_body(body)).await {
            Ok(body) => body?,
            Err(_elapsed) => return Err(ApiError::request_timeout(self.request_timeout)),
        };

        let remaining = self.request_timeout.saturating_sub(started.elapsed());
        let handling = self.check_and_run(request_id, parts, &body, source_ip, summary);
        match tokio::time::timeout(remaining, handling).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ApiError::handling_timeout(self.request_timeout)),
        }
    }

    /// Runs steps 3 to 8 on a request whose body has been read.
    async fn check_and_run(
        &self,
        request_id: &str,
        parts: &Parts,
        body: &[u8],
        source_ip: Option<IpAddr>,
        summary: &mut RequestSummary,
    ) -> Result<ActionOutput, ApiError> {
        let query_text = parts.uri.query().unwrap_or_default();
        let query = parse_urlencoded(query_text.as_bytes(), ParamSource::Query)
            .map_err(|error| ApiError::invalid_params(&error))?;
        let form = parse_form(&parts.headers, body)?;
        let params =
            Params::merge(&query, &form).map_err(|error| ApiError::invalid_params(&error))?;

        let (action, action_in_params) =
            common_value(&params, &parts.headers, "Action", "x-acs-action")?;
        summary.action = Some(action.to_owned());
        let (version, version_in_params) =
            common_value(&params, &parts.headers, "Version", "x-acs-version")?;
        if version != API_VERSION {
            return Err(ApiError::invalid_version(version));
        }
        let handler = actions::find(action).ok_or_else(|| ApiError::api_not_found(action))?;
        check_format(&params)?;

        let now = self.clock.now();
        let signed = SignedParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
            query: &query,
            params: &params,
            body,
            action_in_params,
            version_in_params,
        };
        let verified = authenticate(&self.keys, now, &signed)?;
        let caller = &verified.key.caller;
        summary.access_key_id = Some(caller.access_key_id.clone());

        self.throttle
            .acquire(&caller.access_key_id, now)
            .map_err(ApiError::throttled)?;
        let nonce_expiry = verified.timestamp.saturating_add(TIMESTAMP_WINDOW);
        match self
            .nonces
            .record(&caller.access_key_id, &verified.nonce, nonce_expiry, now)
        {
            NonceOutcome::Fresh => {}
            NonceOutcome::Replayed => return Err(ApiError::nonce_used(&verified.nonce)),
            // The handler logs this 503 at error level, like every 5xx.
            NonceOutcome::Full => {
                return Err(ApiError::nonce_cache_full(self.nonce_cache_capacity));
            }
        }

        let ctx = ActionContext {
            request_id: request_id.to_owned(),
            caller: caller.clone(),
            action: action.to_owned(),
            source_ip,
        };
        let request = ActionRequest {
            ctx: &ctx,
            params: &params,
            services: &self.services,
            policies: &verified.key.policies,
        };
        handler(request).await
    }

    async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ApiError::body_too_large(self.max_body_bytes))
            }
            Err(_) => Err(ApiError::body_unreadable()),
        }
    }
}

/// Parses a non-empty body as `application/x-www-form-urlencoded`. An empty body has no
/// parameters, whatever its content type.
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let displayed_type = if content_type.is_empty() {
            "(none)"
        } else {
            content_type.as_str()
        };
        return Err(ApiError::unsupported_media_type(displayed_type));
    }
    parse_urlencoded(body, ParamSource::FormBody).map_err(|error| ApiError::invalid_params(&error))
}

/// Reads `Action` or `Version` from the parameters or from its `x-acs-*` header. Returns the
/// value and whether it came from the parameters. When both are sent they must agree.
fn common_value<'a>(
    params: &'a Params,
    headers: &'a HeaderMap,
    name: &str,
    header_name: &str,
) -> Result<(&'a str, bool), ApiError> {
    let from_params = params.get(name).filter(|value| !value.is_empty());
    let from_header = headers
        .get(header_name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    match (from_params, from_header) {
        (Some(param), Some(header)) if param != header => Err(ApiError::invalid_parameter(
            name,
            format!(
                "The {name} parameter {} and the {header_name} header {} differ. Send the \
                 same value in both, or only one of them.",
                quote_value(param),
                quote_value(header)
            ),
        )),
        (Some(param), _) => Ok((param, true)),
        (None, Some(header)) => Ok((header, false)),
        (None, None) => Err(ApiError::missing(name, "")),
    }
}

fn check_format(params: &Params) -> Result<(), ApiError> {
    match params.get("Format") {
        None => Ok(()),
        Some(format) if format.eq_ignore_ascii_case("json") => Ok(()),
        Some(format) => Err(ApiError::invalid_parameter(
            "Format",
            format!(
                "The Format value {} is not supported. Send Format=JSON or leave it out; this \
                 server answers in JSON only.",
                quote_value(format)
            ),
        )),
    }
}
