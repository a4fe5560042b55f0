//! The ApsaraMQ username `Mode|KeyId|InstanceId`.

use std::fmt;

use crate::error::{AuthError, AuthErrorKind, quote};

/// The login mode named by the first part of an ApsaraMQ username.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginMode {
    /// `Signature|<AccessKeyId>|<InstanceId>`: the password is the client id signed with the
    /// AccessKey secret of the instance's owner account.
    Signature,
    /// `Token|<AccessKeyId>|<InstanceId>`: the password is one or more `R|token`, `W|token` or
    /// `RW|token` pairs issued by `ApplyToken`.
    Token,
    /// `DeviceCredential|<DeviceAccessKeyId>|<InstanceId>`: the password is the client id signed
    /// with a device secret issued by `RegisterDeviceCredential`.
    DeviceCredential,
}

impl LoginMode {
    /// Returns the mode's name as it appears in a username.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMode::Signature => "Signature",
            LoginMode::Token => "Token",
            LoginMode::DeviceCredential => "DeviceCredential",
        }
    }

    /// Parses a mode name. Names are case-sensitive, as in the cloud product.
    fn from_name(name: &str) -> Option<LoginMode> {
        match name {
            "Signature" => Some(LoginMode::Signature),
            "Token" => Some(LoginMode::Token),
            "DeviceCredential" => Some(LoginMode::DeviceCredential),
            _ => None,
        }
    }
}

impl fmt::Display for LoginMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three parts of an ApsaraMQ username, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Login<'a> {
    /// The login mode, from the first part.
    pub mode: LoginMode,
    /// The AccessKey id (Signature and Token modes) or the device AccessKey id
    /// (DeviceCredential mode), from the second part.
    pub key_id: &'a str,
    /// The instance the client means to log in to, from the third part.
    pub instance_id: &'a str,
}

/// Parses a username of the form `Mode|KeyId|InstanceId`.
///
/// The username must have exactly three non-empty parts separated by `|`, and the mode must be
/// `Signature`, `Token` or `DeviceCredential`. Any other username is rejected with
/// [`AuthErrorKind::BadUserNameOrPassword`].
pub fn parse_username(username: &str) -> Result<Login<'_>, AuthError> {
    let parts: Vec<&str> = username.split('|').collect();
    let [mode, key_id, instance_id] = parts[..] else {
        return Err(not_three_parts(username));
    };
    if mode.is_empty() || key_id.is_empty() || instance_id.is_empty() {
        return Err(not_three_parts(username));
    }

    let Some(mode) = LoginMode::from_name(mode) else {
        return Err(AuthError::new(
            AuthErrorKind::BadUserNameOrPassword,
            format!(
                "login mode {} in username {} is not supported, \
                 so use Signature, Token or DeviceCredential",
                quote(mode),
                quote(username),
            ),
        ));
    };

    Ok(Login {
        mode,
        key_id,
        instance_id,
    })
}

fn not_three_parts(username: &str) -> AuthError {
    AuthError::new(
        AuthErrorKind::BadUserNameOrPassword,
        format!(
            "username {} is not of the form Mode|KeyId|InstanceId with three non-empty parts, \
             for example Signature|<AccessKeyId>|<InstanceId>, and plain usernames of custom \
             authentication identities are not supported yet",
            quote(username),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_username_reads_each_mode() {
        let cases = [
            ("Signature|LTAIkey|mqtt-cn-hz01", LoginMode::Signature),
            ("Token|LTAIkey|mqtt-cn-hz01", LoginMode::Token),
            (
                "DeviceCredential|LTAIkey|mqtt-cn-hz01",
                LoginMode::DeviceCredential,
            ),
        ];
        for (username, mode) in cases {
            let login = parse_username(username).unwrap();
            assert_eq!(login.mode, mode, "{username}");
            assert_eq!(login.key_id, "LTAIkey", "{username}");
            assert_eq!(login.instance_id, "mqtt-cn-hz01", "{username}");
        }
    }

    #[test]
    fn parse_username_rejects_wrong_part_count() {
        for username in [
            "",
            "alice",
            "Signature|LTAIkey",
            "Signature|LTAIkey|mqtt-cn-hz01|extra",
            "Signature|LTAIkey|mqtt-cn-hz01|",
        ] {
            let error = parse_username(username).unwrap_err();
            assert_eq!(
                error.kind,
                AuthErrorKind::BadUserNameOrPassword,
                "{username}"
            );
            assert!(error.detail.contains("Mode|KeyId|InstanceId"), "{username}");
            assert!(error.detail.contains("custom authentication"), "{username}");
        }
    }

    #[test]
    fn parse_username_rejects_empty_parts() {
        for username in [
            "|LTAIkey|mqtt-cn-hz01",
            "Signature||mqtt-cn-hz01",
            "Signature|LTAIkey|",
            "||",
        ] {
            let error = parse_username(username).unwrap_err();
            assert_eq!(
                error.kind,
                AuthErrorKind::BadUserNameOrPassword,
                "{username}"
            );
            assert!(error.detail.contains("non-empty"), "{username}");
        }
    }

    #[test]
    fn parse_username_rejects_unknown_mode() {
        for username in [
            "signature|LTAIkey|mqtt-cn-hz01",
            "Password|LTAIkey|mqtt-cn-hz01",
        ] {
            let error = parse_username(username).unwrap_err();
            assert_eq!(error.kind, AuthErrorKind::BadUserNameOrPassword);
            assert!(error.detail.contains("is not supported"), "{username}");
            assert!(
                error
                    .detail
                    .contains("Signature, Token or DeviceCredential")
            );
        }
    }

    #[test]
    fn login_mode_names_round_trip() {
        for mode in [
            LoginMode::Signature,
            LoginMode::Token,
            LoginMode::DeviceCredential,
        ] {
            assert_eq!(LoginMode::from_name(mode.as_str()), Some(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
    }
}
