//! The `ACS3-HMAC-SHA256` signature in the `Authorization` header, which the current SDKs use
//! by default.
//!
//! ```text
//! CanonicalRequest = METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n
//!                    SignedHeaders \n HexSHA256(body)
//! StringToSign     = "ACS3-HMAC-SHA256" \n HexSHA256(CanonicalRequest)
//! Signature        = Hex(HMAC-SHA256(key = AccessKey secret, StringToSign))
//! Authorization    = ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b;c>,Signature=<hex>
//! ```
//!
//! CanonicalQuery contains the query string parameters only (the body is covered by its hash),
//! sorted by name, each as `encode(name)=encode(value)` with RFC 3986 encoding. CanonicalHeaders
//! contains one `name:value\n` line per signed header in the order of SignedHeaders, with the value
//! trimmed and repeated values sorted and joined with `,`.
//!
//! The gateway's verifier and the client signer ([`sign_acs3`]) share these functions.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::encoding::percent_encode;

/// The algorithm name that starts the `Authorization` value and the string to sign.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// Returns the lowercase hex SHA-256 of `data`, as `x-acs-content-sha256` carries it.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Builds CanonicalQuery from decoded query string parameters.
pub fn canonical_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_unstable();
    sorted
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Builds one CanonicalHeaders line from a lowercase header name and all its values.
pub fn canonical_header_line<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> String {
    let mut trimmed: Vec<&str> = values.into_iter().map(str::trim).collect();
    trimmed.sort_unstable();
    format!("{name}:{}\n", trimmed.join(","))
}

/// Joins the parts of a canonical request. `canonical_headers` already ends with `\n`.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    )
}

pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()))
}

/// Signs `string_to_sign` and returns the lowercase hex signature.
pub fn sign(access_key_secret: &str, string_to_sign: &str) -> String {
    hex::encode(
        mac(access_key_secret, string_to_sign)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a hex signature in constant time.
pub(crate) fn verify(access_key_secret: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(claimed) = hex::decode(signature) else {
        return false;
    };
    mac(access_key_secret, string_to_sign)
        .verify_slice(&claimed)
        .is_ok()
}

fn mac(access_key_secret: &str, string_to_sign: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this never takes the fallback branch.
    let mut mac = HmacSha256::new_from_slice(access_key_secret.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(string_to_sign.as_bytes());
    mac
}

/// The parts of an HTTP request that an `ACS3-HMAC-SHA256` signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Acs3Request<'a> {
    pub method: &'a str,
    /// The request path, `/` for every OnsMqtt action.
    pub path: &'a str,
    /// Decoded query string parameters.
    pub query: &'a [(String, String)],
    /// Headers to sign, names in any case. Include `host`, `x-acs-action`, `x-acs-version`,
    /// `x-acs-date`, `x-acs-signature-nonce`, `x-acs-content-sha256` and, with a body,
    /// `content-type`: the gateway rejects requests whose `host` or `x-acs-*` headers are not
    /// all signed.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Signs `request` as the official SDKs do and returns the `Authorization` header value. Every
/// header in `request.headers` is signed, names lowercased and sorted.
pub fn sign_acs3(
    access_key_id: &str,
    access_key_secret: &str,
    request: &Acs3Request<'_>,
) -> String {
    let mut names: Vec<String> = request
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    names.sort_unstable();
    names.dedup();

    let canonical_headers: String = names
        .iter()
        .map(|name| {
            let values = request
                .headers
                .iter()
                .filter(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str());
            canonical_header_line(name, values)
        })
        .collect();
    let signed_headers = names.join(";");
    let query = canonical_query(
        request
            .query
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let canonical = canonical_request(
        request.method,
        request.path,
        &query,
        &canonical_headers,
        &signed_headers,
        &hex_sha256(request.body),
    );
    let signature = sign(access_key_secret, &string_to_sign(&canonical));
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// The fields of an `Authorization: ACS3-HMAC-SHA256 ...` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub(crate) access_key_id: String,
    /// Lowercase header names in the client's order.
    pub(crate) signed_headers: Vec<String>,
    pub(crate) signature: String,
}

/// Failure to parse an `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthorizationError {
    /// The algorithm is not `ACS3-HMAC-SHA256`, such as `ACS3-HMAC-SM3`.
    UnsupportedAlgorithm(String),
    /// A field is missing, empty, repeated or malformed. The message names the field.
    Malformed(String),
}

/// Parses `ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`. Fields may
/// come in any order, with spaces after the commas.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization, AuthorizationError> {
    let value = value.trim();
    let (algorithm, fields) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(AuthorizationError::UnsupportedAlgorithm(
            algorithm.to_owned(),
        ));
    }

    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in fields.split(',') {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let Some((name, field_value)) = field.split_once('=') else {
            return Err(AuthorizationError::Malformed(format!(
                "the field {field:?} has no '='"
            )));
        };
        let slot = match name.trim() {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => {
                return Err(AuthorizationError::Malformed(format!(
                    "the field {other:?} is not one of Credential, SignedHeaders and Signature"
                )));
            }
        };
        if slot.replace(field_value.trim().to_owned()).is_some() {
            return Err(AuthorizationError::Malformed(format!(
                "the field {} appears twice",
                name.trim()
            )));
        }
    }

    let access_key_id = require_field(credential, "Credential")?;
    let signed_headers = require_field(signed_headers, "SignedHeaders")?;
    let signature = require_field(signature, "Signature")?;

    let mut names = Vec::new();
    for name in signed_headers.split(';') {
        if name.is_empty() || name.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(AuthorizationError::Malformed(format!(
                "SignedHeaders {signed_headers:?} must list non-empty lowercase header names \
                 separated by ';'"
            )));
        }
        names.push(name.to_owned());
    }

    Ok(Authorization {
        access_key_id,
        signed_headers: names,
        signature,
    })
}

fn require_field(field: Option<String>, name: &str) -> Result<String, AuthorizationError> {
    match field {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(AuthorizationError::Malformed(format!(
            "the field {name} is missing or empty"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// The DisasterDowngrade vector, checked against the official Python SDK's
    /// `get_authorization`.
    #[test]
    fn disaster_downgrade_vector() {
        let body = b"DowngradeInstanceId=mqtt-cn-bbb&InstanceId=mqtt-cn-aaa";
        assert_eq!(
            hex_sha256(body),
            "e28d37393f62b387d5c1350f68b3fa2da81697068e9cc69b34d607879d3491c0"
        );
        let headers = owned(&[
            ("host", "onsmqtt.cn-hangzhou.aliyuncs.com"),
            ("x-acs-version", "2020-04-20"),
            ("x-acs-action", "DisasterDowngrade"),
            ("x-acs-date", "2025-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", "3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b"),
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            (
                "x-acs-content-sha256",
                "e28d37393f62b387d5c1350f68b3fa2da81697068e9cc69b34d607879d3491c0",
            ),
        ]);
        let request = Acs3Request {
            method: "POST",
            path: "/",
            query: &[],
            headers: &headers,
            body,
        };

        let authorization = sign_acs3("testid", "testsecret", &request);

        assert_eq!(
            authorization,
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=accept;content-type;host;\
             x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=c0efd3d4efc1a1d996d0f742907bf6d17e0d00bec7a1b0a555b7893c650f25f6"
        );
    }

    #[test]
    fn canonical_request_of_vector() {
        let headers: String = [
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "onsmqtt.cn-hangzhou.aliyuncs.com"),
        ]
        .iter()
        .map(|(name, value)| canonical_header_line(name, [*value]))
        .collect();
        let canonical = canonical_request(
            "POST",
            "/",
            "",
            &headers,
            "accept;content-type;host",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(
            canonical,
            "POST\n/\n\naccept:application/json\ncontent-type:application/x-www-form-urlencoded\n\
             host:onsmqtt.cn-hangzhou.aliyuncs.com\n\naccept;content-type;host\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(string_to_sign(&canonical).starts_with("ACS3-HMAC-SHA256\n"));
        assert_eq!(string_to_sign(&canonical).len(), ALGORITHM.len() + 1 + 64);
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        let query = canonical_query([
            ("InstanceId", "mqtt-cn-a"),
            ("ClientId", "GID_a@@@dev 1/x*~"),
            ("ClientIdList.2", "b"),
            ("ClientIdList.1", ""),
        ]);
        assert_eq!(
            query,
            "ClientId=GID_a%40%40%40dev%201%2Fx%2A~&ClientIdList.1=&ClientIdList.2=b\
             &InstanceId=mqtt-cn-a"
        );
    }

    #[test]
    fn canonical_header_line_trims_and_sorts() {
        assert_eq!(
            canonical_header_line("x-acs-tag", [" b ", "a"]),
            "x-acs-tag:a,b\n"
        );
    }

    #[test]
    fn sign_acs3_lowercases_and_merges_header_names() {
        let headers = owned(&[("Host", "h"), ("X-Acs-Date", "d"), ("x-acs-date", "c")]);
        let request = Acs3Request {
            method: "GET",
            path: "/",
            query: &[],
            headers: &headers,
            body: b"",
        };
        let authorization = sign_acs3("id", "secret", &request);
        assert!(authorization.contains("SignedHeaders=host;x-acs-date,"));

        let canonical = canonical_request(
            "GET",
            "/",
            "",
            "host:h\nx-acs-date:c,d\n",
            "host;x-acs-date",
            &hex_sha256(b""),
        );
        let expected = sign("secret", &string_to_sign(&canonical));
        assert!(authorization.ends_with(&format!("Signature={expected}")));
    }

    #[test]
    fn verify_checks_hex_signature() {
        let sts = string_to_sign("x");
        let good = sign("secret", &sts);
        assert!(verify("secret", &sts, &good));
        assert!(verify("secret", &sts, &good.to_ascii_uppercase()));
        assert!(!verify("other", &sts, &good));
        assert!(!verify("secret", &sts, "zz"));
        assert!(!verify("secret", &sts, ""));
    }

    #[test]
    fn parse_authorization_reads_fields() {
        let parsed = parse_authorization(
            "ACS3-HMAC-SHA256 Credential=LTAIx, SignedHeaders=host;x-acs-date,Signature=ab01",
        );
        assert_eq!(
            parsed,
            Ok(Authorization {
                access_key_id: "LTAIx".to_owned(),
                signed_headers: vec!["host".to_owned(), "x-acs-date".to_owned()],
                signature: "ab01".to_owned(),
            })
        );
    }

    #[test]
    fn parse_authorization_rejects_bad_headers() {
        let cases = [
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=Host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host;;date,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 Credential=a,Region=x,SignedHeaders=host,Signature=ab",
            "ACS3-HMAC-SHA256 garbage",
            "ACS3-HMAC-SHA256",
        ];
        for case in cases {
            assert!(
                matches!(
                    parse_authorization(case),
                    Err(AuthorizationError::Malformed(_))
                ),
                "{case} was accepted"
            );
        }
    }

    #[test]
    fn parse_authorization_names_other_algorithms() {
        assert_eq!(
            parse_authorization("ACS3-HMAC-SM3 Credential=a,SignedHeaders=host,Signature=ab"),
            Err(AuthorizationError::UnsupportedAlgorithm(
                "ACS3-HMAC-SM3".to_owned()
            ))
        );
    }
}
