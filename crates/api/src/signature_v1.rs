//! The classic RPC signature: a Base64 HMAC-SHA1 in the `Signature` parameter.
//!
//! The string to sign is `METHOD&%2F&` followed by the percent-encoded canonical query string:
//! every parameter except `Signature`, from the query string and the form body together, sorted
//! by name in byte order, each as `encode(name)=encode(value)`, joined with `&`. The HMAC key is
//! the AccessKey secret followed by `&`. Encoding is RFC 3986 (see [`percent_encode`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::encoding::percent_encode;

/// The only `SignatureMethod` this scheme accepts.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The only `SignatureVersion` this scheme accepts.
pub const SIGNATURE_VERSION: &str = "1.0";

type HmacSha1 = Hmac<Sha1>;

/// Builds the string to sign from the HTTP method and the parameters, `Signature` left out.
/// The parameters may come in any order; they are sorted here.
pub fn string_to_sign<'a>(
    method: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_unstable();
    let canonical_query = sorted
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query)
    )
}

/// Signs `string_to_sign` and returns the Base64 value for the `Signature` parameter.
pub fn sign(access_key_secret: &str, string_to_sign: &str) -> String {
    BASE64.encode(
        mac(access_key_secret, string_to_sign)
            .finalize()
            .into_bytes(),
    )
}

/// Checks a Base64 `Signature` value in constant time.
pub(crate) fn verify(access_key_secret: &str, string_to_sign: &str, signature: &str) -> bool {
    let Ok(claimed) = BASE64.decode(signature.as_bytes()) else {
        return false;
    };
    mac(access_key_secret, string_to_sign)
        .verify_slice(&claimed)
        .is_ok()
}

fn mac(access_key_secret: &str, string_to_sign: &str) -> HmacSha1 {
    let key = format!("{access_key_secret}&");
    // HMAC accepts keys of any length, so this never takes the fallback branch.
    let mut mac = HmacSha1::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <HmacSha1 as KeyInit>::new(&Default::default()));
    mac.update(string_to_sign.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DisasterDowngrade vector, checked against the official Python SDK's RPC signer.
    #[test]
    fn disaster_downgrade_vector() {
        let params = [
            ("AccessKeyId", "testid"),
            ("Action", "DisasterDowngrade"),
            ("DowngradeInstanceId", "mqtt-cn-bbb"),
            ("Format", "JSON"),
            ("InstanceId", "mqtt-cn-aaa"),
            ("RegionId", "cn-hangzhou"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2025-01-01T00:00:00Z"),
            ("Version", "2020-04-20"),
        ];
        let expected_string_to_sign = "POST&%2F&AccessKeyId%3Dtestid%26Action%3DDisasterDowngrade\
            %26DowngradeInstanceId%3Dmqtt-cn-bbb%26Format%3DJSON%26InstanceId%3Dmqtt-cn-aaa\
            %26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1\
            %26SignatureNonce%3D3f1e0c7a9b2d4e6f8a0b1c2d3e4f5a6b%26SignatureVersion%3D1.0\
            %26Timestamp%3D2025-01-01T00%253A00%253A00Z%26Version%3D2020-04-20";

        let string_to_sign = string_to_sign("POST", params);

        assert_eq!(string_to_sign, expected_string_to_sign);
        assert_eq!(
            sign("testsecret", &string_to_sign),
            "iVF5k+XeLgQ5YFSq4rVvNoRZ6yo="
        );
        assert!(verify(
            "testsecret",
            &string_to_sign,
            "iVF5k+XeLgQ5YFSq4rVvNoRZ6yo="
        ));
    }

    /// The DescribeRegions example of Alibaba Cloud's RPC signature documentation.
    #[test]
    fn describe_regions_vector() {
        // Deliberately unsorted: string_to_sign sorts.
        let params = [
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ];
        let expected_string_to_sign = "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions\
            %26Format%3DXML%26SignatureMethod%3DHMAC-SHA1\
            %26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0\
            %26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26";

        let string_to_sign = string_to_sign("GET", params);

        assert_eq!(string_to_sign, expected_string_to_sign);
        assert_eq!(
            sign("testsecret", &string_to_sign),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn empty_signature_type_is_signed() {
        let with_empty = string_to_sign("GET", [("SignatureType", ""), ("A", "1")]);
        assert_eq!(with_empty, "GET&%2F&A%3D1%26SignatureType%3D");
    }

    #[test]
    fn verify_rejects_wrong_and_malformed_signatures() {
        let sts = string_to_sign("GET", [("A", "1")]);
        let good = sign("secret", &sts);
        assert!(verify("secret", &sts, &good));
        assert!(!verify("other", &sts, &good));
        assert!(!verify("secret", &sts, "not base64!"));
        assert!(!verify("secret", &sts, ""));
    }
}
