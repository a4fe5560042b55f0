//! The error type of every check in this crate.

use crate::access_rule::DenyReason;

/// The kind of an [`AuthError`], which decides the MQTT reason code a broker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthErrorKind {
    /// The username or password is malformed or does not match a credential.
    BadUserNameOrPassword,
    /// The credentials are well formed but the login is not allowed on this instance.
    NotAuthorized,
    /// The client id is malformed or names an unregistered Group ID.
    ClientIdentifierNotValid,
    /// The client may not publish to this topic or subscribe to this filter.
    TopicNotAllowed,
    /// An access rule denies the topic or filter, and states the reason code to send.
    TopicDeniedByRule(DenyReason),
}

/// A rejected login or topic access, with a detail for the client and the log.
///
/// The detail names the offending value and what to do about it. It never contains a secret or
/// a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct AuthError {
    /// The kind of check that failed.
    pub kind: AuthErrorKind,
    /// A readable sentence naming the value and the fix.
    pub detail: String,
}

impl AuthError {
    /// Creates an error of `kind` with `detail`.
    pub fn new(kind: AuthErrorKind, detail: impl Into<String>) -> AuthError {
        AuthError {
            kind,
            detail: detail.into(),
        }
    }

    /// Returns the MQTT 5.0 reason code for this error, for CONNACK, PUBACK, SUBACK or DISCONNECT.
    ///
    /// Bad username or password is 0x86, Not authorized is 0x87 (for logins and topics alike)
    /// and Client Identifier not valid is 0x85. A topic denied by an access rule gets the rule's
    /// code, 0x87 or 0x80.
    pub fn reason_code(&self) -> u8 {
        match self.kind {
            AuthErrorKind::BadUserNameOrPassword => 0x86,
            AuthErrorKind::NotAuthorized => 0x87,
            AuthErrorKind::ClientIdentifierNotValid => 0x85,
            AuthErrorKind::TopicNotAllowed => 0x87,
            AuthErrorKind::TopicDeniedByRule(reason) => reason.reason_code(),
        }
    }

    /// Returns the MQTT 3.1 and 3.1.1 CONNACK return code for a rejected login.
    ///
    /// Identifier rejected is 2, bad user name or password is 4 and not authorized is 5.
    /// [`AuthErrorKind::TopicNotAllowed`] also maps to 5, although 3.1.1 has no return code for a
    /// rejected PUBLISH (the broker closes the connection) and a SUBACK uses 0x80 instead.
    pub fn connack_return_code_v3(&self) -> u8 {
        match self.kind {
            AuthErrorKind::ClientIdentifierNotValid => 2,
            AuthErrorKind::BadUserNameOrPassword => 4,
            AuthErrorKind::NotAuthorized => 5,
            AuthErrorKind::TopicNotAllowed | AuthErrorKind::TopicDeniedByRule(_) => 5,
        }
    }
}

/// Maximum number of characters of a client-supplied value quoted in an error detail.
const MAX_QUOTED_CHARS: usize = 80;

/// Quotes a client-supplied value for an error detail, cut to [`MAX_QUOTED_CHARS`] characters.
///
/// Debug formatting escapes quotes and control characters, so the value cannot break the line
/// it is logged on. A longer value is cut on a character boundary and marked with `...`.
pub(crate) fn quote(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}...", &value[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_match_mqtt5() {
        let code = |kind| AuthError::new(kind, "x").reason_code();
        assert_eq!(code(AuthErrorKind::BadUserNameOrPassword), 0x86);
        assert_eq!(code(AuthErrorKind::NotAuthorized), 0x87);
        assert_eq!(code(AuthErrorKind::ClientIdentifierNotValid), 0x85);
        assert_eq!(code(AuthErrorKind::TopicNotAllowed), 0x87);
        let unspecified = AuthErrorKind::TopicDeniedByRule(DenyReason::UnspecifiedError);
        assert_eq!(code(unspecified), 0x80);
        let not_authorized = AuthErrorKind::TopicDeniedByRule(DenyReason::NotAuthorized);
        assert_eq!(code(not_authorized), 0x87);
    }

    #[test]
    fn return_codes_match_mqtt311() {
        let code = |kind| AuthError::new(kind, "x").connack_return_code_v3();
        assert_eq!(code(AuthErrorKind::ClientIdentifierNotValid), 2);
        assert_eq!(code(AuthErrorKind::BadUserNameOrPassword), 4);
        assert_eq!(code(AuthErrorKind::NotAuthorized), 5);
        assert_eq!(code(AuthErrorKind::TopicNotAllowed), 5);
    }

    #[test]
    fn display_is_the_detail() {
        let error = AuthError::new(
            AuthErrorKind::NotAuthorized,
            "anonymous logins are disabled",
        );
        assert_eq!(error.to_string(), "anonymous logins are disabled");
    }

    #[test]
    fn quote_escapes_and_cuts() {
        assert_eq!(quote("a\"b\n"), r#""a\"b\n""#);

        let long = "é".repeat(MAX_QUOTED_CHARS + 5);
        let quoted = quote(&long);
        assert!(quoted.ends_with("\"..."));
        assert_eq!(
            quoted.chars().filter(|c| *c == 'é').count(),
            MAX_QUOTED_CHARS
        );

        let exact = "x".repeat(MAX_QUOTED_CHARS);
        assert_eq!(quote(&exact), format!("\"{exact}\""));
    }
}
