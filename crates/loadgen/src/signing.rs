//! Request signing for the management API with `ACS3-HMAC-SHA256`, the V3 signature of Alibaba
//! Cloud's OpenAPI, and the device password of `Signature` logins.
//!
//! The ACS3 signature covers a canonical request built from the method, the path, the sorted
//! query, every signed header (lower-case names, sorted) and the SHA-256 of the body:
//!
//! ```text
//! CanonicalRequest = METHOD \n URI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n HexSHA256(body)
//! StringToSign     = "ACS3-HMAC-SHA256" \n HexSHA256(CanonicalRequest)
//! Signature        = hex(HMAC-SHA256(key = AccessKey secret, StringToSign))
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Name of the signature algorithm, the first word of the `Authorization` header.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Characters RFC 3986 leaves unencoded: letters, digits and `-`, `_`, `.`, `~`. Everything else,
/// space and `*` included, is written as `%XX`.
const RFC3986_RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query or form value the way the signature expects (space is `%20`).
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, RFC3986_RESERVED).to_string()
}

/// Encodes parameters as `application/x-www-form-urlencoded`, sorted by name.
pub fn form_body(params: &[(&str, &str)]) -> String {
    let sorted: BTreeMap<&str, &str> = params.iter().copied().collect();
    join_encoded(&sorted)
}

fn join_encoded(params: &BTreeMap<&str, &str>) -> String {
    let pairs: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect();
    pairs.join("&")
}

/// Returns the lower-case hex SHA-256 of `data`, the form `x-acs-content-sha256` carries.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An HTTP request to be signed: everything the canonical request is built from.
pub struct RequestToSign<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign. Names are compared case-insensitively and written in lower case.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The parts of a signature that a caller or a test may want to inspect.
#[derive(Debug, PartialEq, Eq)]
pub struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// Lower-case header names joined by `;`, as the `SignedHeaders` field lists them.
    pub signed_headers: String,
    /// Lower-case hex HMAC-SHA256.
    pub signature: String,
}

impl Signature {
    /// Formats the `Authorization` header value for the given AccessKey id.
    pub fn authorization(&self, access_key_id: &str) -> String {
        format!(
            "{ALGORITHM} Credential={access_key_id},SignedHeaders={},Signature={}",
            self.signed_headers, self.signature
        )
    }
}

/// Signs a request with ACS3-HMAC-SHA256 and the AccessKey secret (used as the key as it is).
pub fn sign_acs3(request: &RequestToSign<'_>, access_key_secret: &str) -> Signature {
    let query: BTreeMap<&str, &str> = request.query.iter().copied().collect();
    let canonical_query = join_encoded(&query);

    // The V3 signature joins the values of a repeated header with commas, in sorted order.
    let mut headers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in request.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.trim());
    }
    let mut canonical_headers = String::new();
    for (name, values) in &mut headers {
        values.sort_unstable();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = headers.keys().cloned().collect::<Vec<_>>().join(";");

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.path,
        canonical_query,
        canonical_headers,
        signed_headers,
        hex_sha256(request.body)
    );
    let string_to_sign = format!("{ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());

    Signature {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
    }
}

/// Computes the password of a `Signature|<AccessKeyId>|<InstanceId>` login:
/// Base64(HMAC-SHA1(key = AccessKey secret, message = client id)).
pub fn device_password(access_key_secret: &str, client_id: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(client_id.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_BODY: &str = "DowngradeInstanceId=mqtt-cn-bbb&InstanceId=mqtt-cn-aaa";

    fn vector_headers(content_sha256: &str) -> Vec<(&'static str, String)> {
        vec![
            ("host", "onsmqtt.cn-hangzhou.aliyuncs.com".to_owned()),
            ("x-acs-action", "DisasterDowngrade".to_owned()),
            ("x-acs-version", "2020-04-20".to_owned()),
            ("x-acs-date", "2025-01-01T00:00:00Z".to_owned()),
            (
                "x-acs-signature-nonce",
                "3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("x-acs-content-sha256", content_sha256.to_owned()),
        ]
    }

    #[test]
    fn form_body_matches_vector() {
        let body = form_body(&[
            ("InstanceId", "mqtt-cn-aaa"),
            ("DowngradeInstanceId", "mqtt-cn-bbb"),
        ]);
        assert_eq!(body, VECTOR_BODY);
    }

    #[test]
    fn body_hash_matches_vector() {
        assert_eq!(
            hex_sha256(VECTOR_BODY.as_bytes()),
            "e28d37393f62b387d5c1350f68b3fa2da81697068e9cc69b34d607879d3491c0"
        );
    }

    #[test]
    fn empty_body_hash() {
        assert_eq!(
            hex_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn acs3_signature_matches_vector() {
        let owned = vector_headers(&hex_sha256(VECTOR_BODY.as_bytes()));
        let headers: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let signature = sign_acs3(
            &RequestToSign {
                method: "POST",
                path: "/",
                query: &[],
                headers: &headers,
                body: VECTOR_BODY.as_bytes(),
            },
            "testsecret",
        );
        assert_eq!(
            signature.signed_headers,
            "accept;content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;\
             x-acs-signature-nonce;x-acs-version"
        );
        assert_eq!(
            signature.signature,
            "c0efd3d4efc1a1d996d0f742907bf6d17e0d00bec7a1b0a555b7893c650f25f6"
        );
        assert!(signature.string_to_sign.starts_with("ACS3-HMAC-SHA256\n"));
    }

    #[test]
    fn acs3_header_names_are_case_insensitive() {
        let owned = vector_headers(&hex_sha256(VECTOR_BODY.as_bytes()));
        let lower: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let upper_names: Vec<String> = owned.iter().map(|(n, _)| n.to_uppercase()).collect();
        let upper: Vec<(&str, &str)> = upper_names
            .iter()
            .zip(&owned)
            .map(|(n, (_, v))| (n.as_str(), v.as_str()))
            .collect();
        let sign = |headers: &[(&str, &str)]| {
            sign_acs3(
                &RequestToSign {
                    method: "POST",
                    path: "/",
                    query: &[],
                    headers,
                    body: VECTOR_BODY.as_bytes(),
                },
                "testsecret",
            )
        };
        assert_eq!(sign(&lower), sign(&upper));
    }

    #[test]
    fn acs3_canonical_query_is_sorted_and_encoded() {
        let signature = sign_acs3(
            &RequestToSign {
                method: "GET",
                path: "/",
                query: &[("b", "x y*~"), ("a", "1")],
                headers: &[("host", "127.0.0.1:8080")],
                body: b"",
            },
            "secret",
        );
        let lines: Vec<&str> = signature.canonical_request.split('\n').collect();
        assert_eq!(lines[0], "GET");
        assert_eq!(lines[1], "/");
        assert_eq!(lines[2], "a=1&b=x%20y%2A~");
        assert_eq!(lines[3], "host:127.0.0.1:8080");
        assert_eq!(lines[5], "host");
        assert_eq!(lines[6], hex_sha256(b""));
    }

    #[test]
    fn authorization_header_format() {
        let signature = Signature {
            canonical_request: String::new(),
            string_to_sign: String::new(),
            signed_headers: "host;x-acs-date".to_owned(),
            signature: "abcd".to_owned(),
        };
        assert_eq!(
            signature.authorization("LTAIexample"),
            "ACS3-HMAC-SHA256 Credential=LTAIexample,SignedHeaders=host;x-acs-date,Signature=abcd"
        );
    }

    #[test]
    fn device_password_known_values() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog") is the widely published
        // de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9, here in Base64.
        assert_eq!(
            device_password("key", "The quick brown fox jumps over the lazy dog"),
            "3nybhbi3iqa8ino29wqQcBydtNk="
        );
        // Computed with Python's hmac and base64 modules.
        assert_eq!(
            device_password("secret", "GID_demo@@@bench-0"),
            "10/mX9EqLDNjZBh5iQ3WDx8LzxU="
        );
    }
}
