use std::collections::HashMap;

use super::*;
use crate::signature::signature_password;

const INSTANCE: &str = "mqtt-cn-hz01";
const PEER: &str = "mqtt-cn-sh01";
const KEY_ID: &str = "LTAIexample";
const SECRET: &str = "example-secret";
const CLIENT_ID: &str = "GID_demo@@@dev1";

fn policy() -> InstanceAuthPolicy {
    let mut policy = InstanceAuthPolicy::new(INSTANCE);
    policy.accepted_instance_ids.insert(PEER.to_owned());
    policy
        .access_keys
        .insert(KEY_ID.to_owned(), SECRET.to_owned());
    policy.group_ids.insert("GID_demo".to_owned());
    policy.parent_topics.insert("sensors".to_owned());
    policy
}

fn signature_username(instance: &str) -> String {
    format!("Signature|{KEY_ID}|{instance}")
}

fn connect_signature(
    policy: &InstanceAuthPolicy,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<Identity, AuthError> {
    policy.check_connect(client_id, Some(username), Some(password.as_bytes()))
}

fn assert_kind(result: Result<Identity, AuthError>, kind: AuthErrorKind) -> AuthError {
    let error = result.unwrap_err();
    assert_eq!(error.kind, kind, "detail: {}", error.detail);
    error
}

/// A credential lookup with fixed tokens and device credentials, standing in for a later
/// token and credential store.
#[derive(Default)]
struct FixedCredentials {
    /// (instance id, AccessKey id, kind, token).
    tokens: Vec<(String, String, TokenKind, String)>,
    /// (instance id, device AccessKey id, client id) to device secret.
    devices: HashMap<(String, String, String), String>,
}

impl CredentialLookup for FixedCredentials {
    fn token_is_valid(
        &self,
        instance_id: &str,
        access_key_id: &str,
        kind: TokenKind,
        token: &str,
    ) -> bool {
        self.tokens
            .iter()
            .any(|(i, k, t, v)| i == instance_id && k == access_key_id && *t == kind && v == token)
    }

    fn device_credential_secret(
        &self,
        instance_id: &str,
        device_access_key_id: &str,
        client_id: &str,
    ) -> Option<String> {
        let key = (
            instance_id.to_owned(),
            device_access_key_id.to_owned(),
            client_id.to_owned(),
        );
        self.devices.get(&key).cloned()
    }
}

// Signature mode.

#[test]
fn signature_login_succeeds() {
    let policy = policy();
    let password = signature_password(SECRET, CLIENT_ID);
    let identity =
        connect_signature(&policy, CLIENT_ID, &signature_username(INSTANCE), &password).unwrap();
    assert_eq!(identity.principal, "Signature|LTAIexample");
    assert_eq!(identity.client_id, CLIENT_ID);
    assert_eq!(identity.mode, Some(LoginMode::Signature));
}

#[test]
fn signature_login_accepts_dr_peer_instance() {
    let policy = policy();
    let password = signature_password(SECRET, CLIENT_ID);
    let identity =
        connect_signature(&policy, CLIENT_ID, &signature_username(PEER), &password).unwrap();
    assert_eq!(identity.principal, "Signature|LTAIexample");
}

#[test]
fn signature_login_rejects_foreign_instance() {
    let policy = policy();
    let password = signature_password(SECRET, CLIENT_ID);
    let username = signature_username("mqtt-cn-bj99");
    let error = assert_kind(
        connect_signature(&policy, CLIENT_ID, &username, &password),
        AuthErrorKind::NotAuthorized,
    );
    assert_eq!(error.reason_code(), 0x87);
    assert!(
        error.detail.contains("\"mqtt-cn-bj99\""),
        "{}",
        error.detail
    );
    assert!(
        error.detail.contains("neither this instance"),
        "{}",
        error.detail
    );
    assert!(
        error.detail.contains("disaster-recovery group"),
        "{}",
        error.detail
    );
}

#[test]
fn signature_login_rejects_unknown_access_key() {
    let policy = policy();
    let password = signature_password(SECRET, CLIENT_ID);
    let username = format!("Signature|LTAIother|{INSTANCE}");
    let error = assert_kind(
        connect_signature(&policy, CLIENT_ID, &username, &password),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert_eq!(error.reason_code(), 0x86);
    assert!(error.detail.contains("\"LTAIother\""), "{}", error.detail);
    assert!(
        error.detail.contains("is not an AccessKey"),
        "{}",
        error.detail
    );
}

#[test]
fn signature_login_rejects_wrong_password() {
    let policy = policy();
    let username = signature_username(INSTANCE);
    let wrong_secret = signature_password("other-secret", CLIENT_ID);
    let other_client = signature_password(SECRET, "GID_demo@@@dev2");
    for password in [wrong_secret.as_str(), other_client.as_str(), "", "plain"] {
        let error = assert_kind(
            connect_signature(&policy, CLIENT_ID, &username, password),
            AuthErrorKind::BadUserNameOrPassword,
        );
        assert!(error.detail.contains("does not match"), "{}", error.detail);
        assert!(!error.detail.contains(SECRET), "{}", error.detail);
    }
}

#[test]
fn signature_login_rejects_missing_password() {
    let policy = policy();
    let username = signature_username(INSTANCE);
    let error = assert_kind(
        policy.check_connect(CLIENT_ID, Some(&username), None),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(error.detail.contains("has no password"), "{}", error.detail);
}

#[test]
fn signature_login_rejects_non_utf8_password() {
    let policy = policy();
    let username = signature_username(INSTANCE);
    let password: &[u8] = &[0xff, 0x00, 0x80];
    assert_kind(
        policy.check_connect(CLIENT_ID, Some(&username), Some(password)),
        AuthErrorKind::BadUserNameOrPassword,
    );
}

// Usernames and anonymous logins.

#[test]
fn malformed_username_is_rejected() {
    let policy = policy();
    for username in [
        "alice",
        "",
        "Signature|LTAIexample",
        "Signature||mqtt-cn-hz01",
    ] {
        let error = assert_kind(
            connect_signature(&policy, CLIENT_ID, username, "secret"),
            AuthErrorKind::BadUserNameOrPassword,
        );
        assert!(
            error.detail.contains("custom authentication"),
            "{}",
            error.detail
        );
    }

    let error = assert_kind(
        connect_signature(&policy, CLIENT_ID, "Custom|x|mqtt-cn-hz01", "secret"),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(
        error.detail.contains("is not supported"),
        "{}",
        error.detail
    );
}

#[test]
fn anonymous_login_rejected_by_default() {
    let policy = policy();
    let error = assert_kind(
        policy.check_connect(CLIENT_ID, None, None),
        AuthErrorKind::NotAuthorized,
    );
    assert_eq!(error.reason_code(), 0x87);
    assert!(
        error.detail.contains("anonymous logins are disabled"),
        "{}",
        error.detail
    );
    assert!(
        error
            .detail
            .contains("Signature|<AccessKeyId>|mqtt-cn-hz01"),
        "{}",
        error.detail
    );
    assert!(error.detail.contains("HMAC-SHA1"), "{}", error.detail);

    // A password without a username is still anonymous.
    assert_kind(
        policy.check_connect(CLIENT_ID, None, Some(b"secret")),
        AuthErrorKind::NotAuthorized,
    );
}

#[test]
fn anonymous_login_allowed_when_enabled() {
    let mut policy = policy();
    policy.allow_anonymous = true;
    let identity = policy.check_connect(CLIENT_ID, None, None).unwrap();
    assert_eq!(identity.principal, "anonymous");
    assert_eq!(identity.client_id, CLIENT_ID);
    assert_eq!(identity.mode, None);
}

#[test]
fn anonymous_login_still_checks_client_id() {
    let mut policy = policy();
    policy.allow_anonymous = true;
    let error = assert_kind(
        policy.check_connect("GID_other@@@dev1", None, None),
        AuthErrorKind::ClientIdentifierNotValid,
    );
    assert!(error.detail.contains("\"GID_other\""), "{}", error.detail);
}

// Client ids.

#[test]
fn unregistered_group_id_is_rejected() {
    let policy = policy();
    let client_id = "GID_other@@@dev1";
    let password = signature_password(SECRET, client_id);
    let error = assert_kind(
        connect_signature(&policy, client_id, &signature_username(INSTANCE), &password),
        AuthErrorKind::ClientIdentifierNotValid,
    );
    assert_eq!(error.reason_code(), 0x85);
    assert!(
        error.detail.contains("Group ID \"GID_other\""),
        "{}",
        error.detail
    );
    assert!(
        error.detail.contains("must be registered"),
        "{}",
        error.detail
    );
}

#[test]
fn malformed_client_id_is_rejected_when_strict() {
    let policy = policy();
    for client_id in ["plain-client", "GID_demo@@@", "GID_demo@@@a.b", ""] {
        let password = signature_password(SECRET, client_id);
        let error = assert_kind(
            connect_signature(&policy, client_id, &signature_username(INSTANCE), &password),
            AuthErrorKind::ClientIdentifierNotValid,
        );
        assert!(
            error.detail.contains("GroupId@@@DeviceId"),
            "{}",
            error.detail
        );
    }
}

#[test]
fn any_client_id_accepted_when_not_strict() {
    let mut policy = policy();
    policy.require_registered_group_ids = false;
    for client_id in ["plain-client", "GID_other@@@dev1", "GID_demo@@@a.b", "x"] {
        let password = signature_password(SECRET, client_id);
        let identity =
            connect_signature(&policy, client_id, &signature_username(INSTANCE), &password)
                .unwrap();
        assert_eq!(identity.client_id, client_id);
    }

    let identity = connect_signature(
        &policy,
        "GID_other@@@dev1",
        &signature_username(INSTANCE),
        &signature_password(SECRET, "GID_other@@@dev1"),
    )
    .unwrap();
    assert_eq!(identity.client_id_parts().unwrap().group_id, "GID_other");
}

#[test]
fn empty_client_id_left_to_broker_when_not_strict() {
    // The broker assigns an id or answers 0x85 by the MQTT rules, so the policy lets it through.
    let mut policy = policy();
    policy.require_registered_group_ids = false;
    policy.allow_anonymous = true;
    let identity = policy
        .check_connect("", None, None)
        .expect("empty client id passes");
    assert_eq!(identity.client_id, "");
}

#[test]
fn credentials_checked_before_client_id() {
    let policy = policy();
    let client_id = "GID_other@@@dev1";
    let username = signature_username(INSTANCE);
    assert_kind(
        connect_signature(&policy, client_id, &username, "wrong"),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert_kind(
        policy.check_connect(client_id, None, None),
        AuthErrorKind::NotAuthorized,
    );
}

// Token mode.

#[test]
fn token_login_fails_without_lookup() {
    let policy = policy();
    let username = format!("Token|{KEY_ID}|{INSTANCE}");
    for password in ["R|abc", "R|abc|W|def", "RW|abc"] {
        let error = assert_kind(
            policy.check_connect(CLIENT_ID, Some(&username), Some(password.as_bytes())),
            AuthErrorKind::BadUserNameOrPassword,
        );
        assert!(
            error.detail.contains("no token matches"),
            "{}",
            error.detail
        );
        assert!(!error.detail.contains("abc"), "{}", error.detail);
    }
}

#[test]
fn token_login_rejects_unknown_access_key() {
    let policy = policy();
    let username = format!("Token|LTAIother|{INSTANCE}");
    let error = assert_kind(
        policy.check_connect(CLIENT_ID, Some(&username), Some(b"R|abc")),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(
        error.detail.contains("is not an AccessKey"),
        "{}",
        error.detail
    );
}

#[test]
fn token_login_rejects_foreign_instance() {
    let policy = policy();
    let username = format!("Token|{KEY_ID}|mqtt-cn-bj99");
    assert_kind(
        policy.check_connect(CLIENT_ID, Some(&username), Some(b"R|abc")),
        AuthErrorKind::NotAuthorized,
    );
}

#[test]
fn token_password_malformed_is_rejected() {
    let policy = policy();
    let username = format!("Token|{KEY_ID}|{INSTANCE}");
    let cases: [(&[u8], &str); 8] = [
        (b"", "odd number"),
        (b"R", "odd number"),
        (b"R|abc|W", "odd number"),
        (b"X|secret-token", "part 1 is not a token type"),
        (b"R|abc|secret-token|W", "part 3 is not a token type"),
        (b"R|", "the R token is empty"),
        (b"R|abc|R|def", "more than one R token"),
        (&[0xff, b'|', b'a'], "not UTF-8"),
    ];
    for (password, expected) in cases {
        let error = assert_kind(
            policy.check_connect(CLIENT_ID, Some(&username), Some(password)),
            AuthErrorKind::BadUserNameOrPassword,
        );
        assert!(
            error.detail.contains(expected),
            "{expected}: {}",
            error.detail
        );
        assert!(error.detail.contains("Token login password is malformed"));
        assert!(!error.detail.contains("secret-token"), "{}", error.detail);
    }
}

#[test]
fn token_login_with_lookup_checks_every_token() {
    let policy = policy();
    let username = format!("Token|{KEY_ID}|{INSTANCE}");
    let mut credentials = FixedCredentials::default();
    credentials.tokens.push((
        INSTANCE.to_owned(),
        KEY_ID.to_owned(),
        TokenKind::Read,
        "read-token".to_owned(),
    ));
    credentials.tokens.push((
        INSTANCE.to_owned(),
        KEY_ID.to_owned(),
        TokenKind::Write,
        "write-token".to_owned(),
    ));
    let lookup: Option<&dyn CredentialLookup> = Some(&credentials);

    let identity = policy
        .check_connect_with(
            CLIENT_ID,
            Some(&username),
            Some(b"W|write-token|R|read-token"),
            lookup,
        )
        .unwrap();
    assert_eq!(identity.principal, "Token|LTAIexample");
    assert_eq!(identity.mode, Some(LoginMode::Token));

    // One invalid token rejects the whole login, and a token counts only for its own type.
    for password in ["R|read-token|W|stale", "W|read-token", "RW|read-token"] {
        let error = assert_kind(
            policy.check_connect_with(
                CLIENT_ID,
                Some(&username),
                Some(password.as_bytes()),
                lookup,
            ),
            AuthErrorKind::BadUserNameOrPassword,
        );
        assert!(
            error.detail.contains("is not a valid token"),
            "{}",
            error.detail
        );
        assert!(!error.detail.contains("read-token"), "{}", error.detail);
    }
}

// DeviceCredential mode.

#[test]
fn device_credential_login_fails_without_lookup() {
    let policy = policy();
    let username = format!("DeviceCredential|DEVICEKEY|{INSTANCE}");
    let password = signature_password("device-secret", CLIENT_ID);
    let error = assert_kind(
        policy.check_connect(CLIENT_ID, Some(&username), Some(password.as_bytes())),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(
        error.detail.contains("no device credential"),
        "{}",
        error.detail
    );
    assert!(error.detail.contains("\"DEVICEKEY\""), "{}", error.detail);
    assert!(
        error.detail.contains("RegisterDeviceCredential"),
        "{}",
        error.detail
    );
}

#[test]
fn device_credential_login_with_lookup() {
    let policy = policy();
    let username = format!("DeviceCredential|DEVICEKEY|{PEER}");
    let mut credentials = FixedCredentials::default();
    credentials.devices.insert(
        (
            PEER.to_owned(),
            "DEVICEKEY".to_owned(),
            CLIENT_ID.to_owned(),
        ),
        "device-secret".to_owned(),
    );
    let lookup: Option<&dyn CredentialLookup> = Some(&credentials);

    let password = signature_password("device-secret", CLIENT_ID);
    let identity = policy
        .check_connect_with(
            CLIENT_ID,
            Some(&username),
            Some(password.as_bytes()),
            lookup,
        )
        .unwrap();
    assert_eq!(identity.principal, "DeviceCredential|DEVICEKEY");
    assert_eq!(identity.mode, Some(LoginMode::DeviceCredential));

    let wrong = signature_password("other-secret", CLIENT_ID);
    let error = assert_kind(
        policy.check_connect_with(CLIENT_ID, Some(&username), Some(wrong.as_bytes()), lookup),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(error.detail.contains("does not match"), "{}", error.detail);

    // The credential is bound to its client id.
    let other_client = "GID_demo@@@dev2";
    let password = signature_password("device-secret", other_client);
    let error = assert_kind(
        policy.check_connect_with(
            other_client,
            Some(&username),
            Some(password.as_bytes()),
            lookup,
        ),
        AuthErrorKind::BadUserNameOrPassword,
    );
    assert!(
        error.detail.contains("register a device credential"),
        "{}",
        error.detail
    );
}

#[test]
fn device_credential_needs_no_account_key() {
    let mut policy = policy();
    policy.access_keys.clear();
    let username = format!("DeviceCredential|DEVICEKEY|{INSTANCE}");
    let mut credentials = FixedCredentials::default();
    credentials.devices.insert(
        (
            INSTANCE.to_owned(),
            "DEVICEKEY".to_owned(),
            CLIENT_ID.to_owned(),
        ),
        "device-secret".to_owned(),
    );
    let password = signature_password("device-secret", CLIENT_ID);
    let result = policy.check_connect_with(
        CLIENT_ID,
        Some(&username),
        Some(password.as_bytes()),
        Some(&credentials),
    );
    assert!(result.is_ok(), "{result:?}");
}
