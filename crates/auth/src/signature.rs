//! Signature passwords: Base64(HMAC-SHA1(key = secret, message = client id)).
//!
//! Signature mode signs with an AccessKey secret and DeviceCredential mode with a device secret,
//! in the same way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

fn keyed_mac(secret: &str, client_id: &str) -> HmacSha1 {
    // HMAC takes keys of any length (longer keys are hashed first), and hmac 0.13's
    // new_from_slice always returns Ok, so this cannot panic.
    let mut mac =
        HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(client_id.as_bytes());
    mac
}

/// Computes the password of a Signature or DeviceCredential login:
/// Base64(HMAC-SHA1(key = `secret`, message = `client_id`)), standard alphabet with padding.
pub fn signature_password(secret: &str, client_id: &str) -> String {
    let tag = keyed_mac(secret, client_id).finalize().into_bytes();
    STANDARD.encode(tag)
}

/// Reports whether `password` equals `signature_password(secret, client_id)`.
///
/// The MAC is compared in constant time. The password is first decoded with the standard
/// padded Base64 alphabet, which accepts only the canonical encoding, so a password that decodes
/// to the right MAC is byte for byte the expected string.
pub(crate) fn signature_matches(secret: &str, client_id: &str, password: &[u8]) -> bool {
    let Ok(tag) = STANDARD.decode(password) else {
        return false;
    };
    keyed_mac(secret, client_id).verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cloud's documented example: key `XXXXX`, message `GID_Test@@@0001`. The expected value
    /// was computed independently with Python 3's standard library:
    /// `python3 -c "import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b'XXXXX',
    /// b'GID_Test@@@0001',hashlib.sha1).digest()).decode())"`.
    const EXAMPLE_PASSWORD: &str = "vI009IZJZVGRwBwZvnbwjfuXxVM=";

    #[test]
    fn signature_password_matches_example() {
        assert_eq!(
            signature_password("XXXXX", "GID_Test@@@0001"),
            EXAMPLE_PASSWORD
        );
    }

    #[test]
    fn signature_matches_example() {
        assert!(signature_matches(
            "XXXXX",
            "GID_Test@@@0001",
            EXAMPLE_PASSWORD.as_bytes()
        ));
    }

    #[test]
    fn signature_matches_rejects_other_inputs() {
        let client_id = "GID_Test@@@0001";
        assert!(!signature_matches(
            "XXXXY",
            client_id,
            EXAMPLE_PASSWORD.as_bytes()
        ));
        assert!(!signature_matches(
            "XXXXX",
            "GID_Test@@@0002",
            EXAMPLE_PASSWORD.as_bytes()
        ));
        assert!(!signature_matches("XXXXX", client_id, b""));
        assert!(!signature_matches(
            "XXXXX",
            client_id,
            b"not base64 at all!"
        ));
        assert!(!signature_matches("XXXXX", client_id, &[0xff, 0xfe, 0x00]));
    }

    #[test]
    fn signature_matches_rejects_noncanonical_base64() {
        let client_id = "GID_Test@@@0001";
        let unpadded = EXAMPLE_PASSWORD.trim_end_matches('=');
        assert!(!signature_matches("XXXXX", client_id, unpadded.as_bytes()));

        let with_newline = format!("{EXAMPLE_PASSWORD}\n");
        assert!(!signature_matches(
            "XXXXX",
            client_id,
            with_newline.as_bytes()
        ));
    }

    #[test]
    fn signature_password_accepts_long_and_empty_keys() {
        let long_secret = "s".repeat(200);
        let password = signature_password(&long_secret, "GID_Test@@@0001");
        assert!(signature_matches(
            &long_secret,
            "GID_Test@@@0001",
            password.as_bytes()
        ));

        let password = signature_password("", "GID_Test@@@0001");
        assert_eq!(password.len(), 28);
        assert!(signature_matches(
            "",
            "GID_Test@@@0001",
            password.as_bytes()
        ));
    }
}
