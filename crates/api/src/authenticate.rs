//! Signature verification for both schemes, with the timestamp window and the checks of the
//! common parameters. Throttling and the nonce cache come after this, in the gateway.
//!
//! A request whose `Authorization` header starts with `ACS3-` is verified as
//! `ACS3-HMAC-SHA256`; any other request as the classic HMAC-SHA1 `Signature` parameter.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::account::{KeyEntry, KeyStore};
use crate::clock::format_utc;
use crate::encoding::{Params, quote_value};
use crate::errors::ApiError;
use crate::signature_v1;
use crate::signature_v3::{self, AuthorizationError, parse_authorization};

/// How far `Timestamp` or `x-acs-date` may be from the server time, in either direction.
pub(crate) const TIMESTAMP_WINDOW: Duration = Duration::minutes(15);

/// Upper limit on nonce length, which bounds the memory of the nonce cache. The SDKs send 32
/// hex digits or a 36-character UUID.
const NONCE_MAX_CHARS: usize = 128;

/// The parts of a request the signature schemes read.
pub(crate) struct SignedParts<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    /// Decoded query string parameters, which ACS3 signs as CanonicalQuery.
    pub(crate) query: &'a [(String, String)],
    /// Query string and form body parameters merged, which HMAC-SHA1 signs.
    pub(crate) params: &'a Params,
    pub(crate) body: &'a [u8],
    /// Whether `Action` and `Version` came as parameters rather than only as `x-acs-*` headers.
    pub(crate) action_in_params: bool,
    pub(crate) version_in_params: bool,
}

/// A request whose signature verified.
pub(crate) struct Verified<'k> {
    pub(crate) key: &'k KeyEntry,
    pub(crate) nonce: String,
    pub(crate) timestamp: OffsetDateTime,
}

/// Verifies the request's signature against the key it names.
pub(crate) fn authenticate<'k>(
    keys: &'k KeyStore,
    now: OffsetDateTime,
    request: &SignedParts<'_>,
) -> Result<Verified<'k>, ApiError> {
    match request.headers.get(AUTHORIZATION) {
        Some(value) if value.as_bytes().starts_with(b"ACS3-") => {
            let value = header_text(value.as_bytes(), "Authorization")?;
            authenticate_acs3(keys, now, request, value)
        }
        _ => authenticate_hmac_sha1(keys, now, request),
    }
}

fn authenticate_acs3<'k>(
    keys: &'k KeyStore,
    now: OffsetDateTime,
    request: &SignedParts<'_>,
    authorization: &str,
) -> Result<Verified<'k>, ApiError> {
    let authorization = parse_authorization(authorization).map_err(|error| match error {
        AuthorizationError::UnsupportedAlgorithm(algorithm) => {
            ApiError::invalid_signature_method(&algorithm, signature_v3::ALGORITHM)
        }
        AuthorizationError::Malformed(detail) => {
            ApiError::incomplete_signature(&format!("in the Authorization header, {detail}"))
        }
    })?;
    let signed = &authorization.signed_headers;
    check_signed_header_set(request.headers, signed)?;

    let date = required_header(request.headers, "x-acs-date")?;
    let timestamp = parse_timestamp("x-acs-date", date)?;
    check_window(date, timestamp, now)?;
    let nonce = required_header(request.headers, "x-acs-signature-nonce")?;
    check_nonce("x-acs-signature-nonce", nonce)?;
    let claimed_hash = required_header(request.headers, "x-acs-content-sha256")?;

    let key = keys
        .get(&authorization.access_key_id)
        .ok_or_else(|| ApiError::access_key_not_found(&authorization.access_key_id))?;

    let payload_hash = signature_v3::hex_sha256(request.body);
    if claimed_hash != payload_hash {
        return Err(ApiError::content_sha256_mismatch(
            claimed_hash,
            &payload_hash,
        ));
    }

    let mut canonical_headers = String::new();
    for name in signed {
        let mut values = Vec::new();
        for value in request.headers.get_all(name.as_str()) {
            values.push(header_text(value.as_bytes(), name)?);
        }
        canonical_headers.push_str(&signature_v3::canonical_header_line(name, values));
    }
    let canonical_query = signature_v3::canonical_query(
        request
            .query
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let canonical_request = signature_v3::canonical_request(
        request.method,
        request.path,
        &canonical_query,
        &canonical_headers,
        &signed.join(";"),
        &payload_hash,
    );
    let string_to_sign = signature_v3::string_to_sign(&canonical_request);
    if !signature_v3::verify(&key.secret, &string_to_sign, &authorization.signature) {
        return Err(ApiError::signature_mismatch(&string_to_sign));
    }

    Ok(Verified {
        key,
        nonce: nonce.to_owned(),
        timestamp,
    })
}

/// Requires `host`, every `x-acs-*` header and `content-type` (when sent) to be signed, and
/// every signed header to be present.
fn check_signed_header_set(headers: &HeaderMap, signed: &[String]) -> Result<(), ApiError> {
    let is_signed = |name: &str| signed.iter().any(|candidate| candidate == name);
    if !is_signed(HOST.as_str()) {
        return Err(ApiError::incomplete_signature(
            "SignedHeaders does not include host; sign the host header",
        ));
    }
    for name in headers.keys() {
        let name = name.as_str();
        let must_sign = name.starts_with("x-acs-") || name == CONTENT_TYPE.as_str();
        if must_sign && !is_signed(name) {
            return Err(ApiError::incomplete_signature(&format!(
                "the header {name} is sent but not listed in SignedHeaders; sign host, \
                 content-type and every x-acs-* header"
            )));
        }
    }
    for name in signed {
        if !headers.contains_key(name.as_str()) {
            return Err(ApiError::incomplete_signature(&format!(
                "SignedHeaders lists {name}, but the request has no such header"
            )));
        }
    }
    Ok(())
}

/// Returns the single value of a header the ACS3 scheme needs.
fn required_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::incomplete_signature(&format!(
            "the header {name} is missing; send it and list it in SignedHeaders"
        )));
    };
    if values.next().is_some() {
        return Err(ApiError::incomplete_signature(&format!(
            "the header {name} is sent more than once; send it once"
        )));
    }
    let value = header_text(value.as_bytes(), name)?.trim();
    if value.is_empty() {
        return Err(ApiError::incomplete_signature(&format!(
            "the header {name} is empty; send a value"
        )));
    }
    Ok(value)
}

fn header_text<'h>(bytes: &'h [u8], name: &str) -> Result<&'h str, ApiError> {
    std::str::from_utf8(bytes).map_err(|_| {
        ApiError::incomplete_signature(&format!("the header {name} is not valid UTF-8"))
    })
}

fn authenticate_hmac_sha1<'k>(
    keys: &'k KeyStore,
    now: OffsetDateTime,
    request: &SignedParts<'_>,
) -> Result<Verified<'k>, ApiError> {
    let params = request.params;
    let access_key_id = required_param(params, "AccessKeyId")?;
    let signature = required_param(params, "Signature")?;
    let method = required_param(params, "SignatureMethod")?;
    let version = required_param(params, "SignatureVersion")?;
    let timestamp_text = required_param(params, "Timestamp")?;
    let nonce = required_param(params, "SignatureNonce")?;

    // The x-acs-action and x-acs-version headers are outside this signature, so they cannot
    // be trusted to name the action.
    const UNSIGNED_HEADER_HINT: &str = "A request signed with HMAC-SHA1 must carry it in the \
                                        query string or form body, because that signature does \
                                        not cover the x-acs-* headers.";
    if !request.action_in_params {
        return Err(ApiError::missing("Action", UNSIGNED_HEADER_HINT));
    }
    if !request.version_in_params {
        return Err(ApiError::missing("Version", UNSIGNED_HEADER_HINT));
    }

    if method != signature_v1::SIGNATURE_METHOD {
        return Err(ApiError::invalid_signature_method(
            method,
            "SignatureMethod=HMAC-SHA1",
        ));
    }
    if version != signature_v1::SIGNATURE_VERSION {
        return Err(ApiError::invalid_signature_version(version));
    }
    let timestamp = parse_timestamp("Timestamp", timestamp_text)?;
    check_window(timestamp_text, timestamp, now)?;
    check_nonce("SignatureNonce", nonce)?;

    let key = keys
        .get(access_key_id)
        .ok_or_else(|| ApiError::access_key_not_found(access_key_id))?;

    let string_to_sign =
        signature_v1::string_to_sign(request.method, params.sorted_except("Signature"));
    if !signature_v1::verify(&key.secret, &string_to_sign, signature) {
        return Err(ApiError::signature_mismatch(&string_to_sign));
    }

    Ok(Verified {
        key,
        nonce: nonce.to_owned(),
        timestamp,
    })
}

fn required_param<'p>(params: &'p Params, name: &str) -> Result<&'p str, ApiError> {
    match params.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(ApiError::missing(name, "")),
    }
}

/// Parses an RFC 3339 time such as `2025-01-01T00:00:00Z`. Fractions and offsets are accepted.
fn parse_timestamp(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| ApiError::timestamp_format(name, value))
}

fn check_window(
    text: &str,
    timestamp: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    if (now - timestamp).abs() > TIMESTAMP_WINDOW {
        return Err(ApiError::timestamp_expired(
            text,
            &format_utc(now),
            TIMESTAMP_WINDOW.whole_minutes(),
        ));
    }
    Ok(())
}

fn check_nonce(name: &str, nonce: &str) -> Result<(), ApiError> {
    if nonce.chars().count() > NONCE_MAX_CHARS {
        return Err(ApiError::invalid_parameter(
            "SignatureNonce",
            format!(
                "The {name} value {} is longer than {NONCE_MAX_CHARS} characters. Send a \
                 unique value of at most {NONCE_MAX_CHARS} characters, such as a UUID.",
                quote_value(nonce)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    #[test]
    fn window_accepts_fifteen_minutes_both_ways() {
        for offset in [-15, 15, 0] {
            let at = NOW + Duration::minutes(offset);
            assert!(check_window("t", at, NOW).is_ok(), "offset {offset}");
        }
        for offset in [-16, 16] {
            let at = NOW + Duration::minutes(offset);
            let error = check_window("t", at, NOW).err();
            assert_eq!(
                error.map(|e| e.code),
                Some("InvalidTimeStamp.Expired".to_owned()),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn parse_timestamp_forms() {
        assert_eq!(
            parse_timestamp("Timestamp", "2025-01-01T00:00:00Z").ok(),
            Some(NOW)
        );
        assert_eq!(
            parse_timestamp("Timestamp", "2025-01-01T08:00:00+08:00").ok(),
            Some(NOW)
        );
        for bad in [
            "2025-01-01 00:00:00",
            "1735689600",
            "",
            "2025-13-01T00:00:00Z",
        ] {
            let error = parse_timestamp("Timestamp", bad).err();
            assert_eq!(
                error.map(|e| e.code),
                Some("InvalidTimeStamp.Format".to_owned()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nonce_length_is_limited() {
        assert!(check_nonce("SignatureNonce", &"n".repeat(128)).is_ok());
        assert!(check_nonce("SignatureNonce", &"n".repeat(129)).is_err());
    }
}
