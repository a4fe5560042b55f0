//! The CONNECT check: credentials first, then the client id.

use crate::client_id::parse_client_id;
use crate::error::{AuthError, AuthErrorKind, quote};
use crate::policy::{
    ANONYMOUS_PRINCIPAL, CredentialLookup, Identity, InstanceAuthPolicy, TokenKind,
};
use crate::signature::signature_matches;
use crate::username::{Login, LoginMode, parse_username};

impl InstanceAuthPolicy {
    /// Checks the client id, username and password of a CONNECT and returns the client's
    /// identity.
    ///
    /// This is [`check_connect_with`](Self::check_connect_with) without a credential lookup, so
    /// every Token and DeviceCredential login is rejected.
    pub fn check_connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Identity, AuthError> {
        self.check_connect_with(client_id, username, password, None)
    }

    /// Checks the client id, username and password of a CONNECT and returns the client's
    /// identity, looking up tokens and device credentials in `credentials`.
    ///
    /// The credentials are checked before the client id, so a client that cannot log in learns
    /// nothing about the registered Group IDs. The errors, with their MQTT 5.0 reason codes:
    ///
    /// - no username while anonymous logins are off: [`AuthErrorKind::NotAuthorized`] (0x87);
    /// - a username not of the form `Mode|KeyId|InstanceId`, an unknown AccessKey id, a missing
    ///   or wrong password, or an unknown token or device credential:
    ///   [`AuthErrorKind::BadUserNameOrPassword`] (0x86);
    /// - a username naming an instance that is neither this one nor a member of its
    ///   disaster-recovery groups: [`AuthErrorKind::NotAuthorized`] (0x87);
    /// - an empty client id, or, when registered Group IDs are required, a client id that is not
    ///   `GroupId@@@DeviceId` or names an unregistered Group ID:
    ///   [`AuthErrorKind::ClientIdentifierNotValid`] (0x85).
    ///
    /// A CONNECT without a username is anonymous even if it carries a password, as MQTT 5.0
    /// allows. An empty username is a username, and it is rejected as malformed.
    pub fn check_connect_with(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        credentials: Option<&dyn CredentialLookup>,
    ) -> Result<Identity, AuthError> {
        let identity = match username {
            None => self.check_anonymous(client_id)?,
            Some(username) => self.check_login(client_id, username, password, credentials)?,
        };
        self.check_client_id(client_id)?;
        Ok(identity)
    }

    fn check_anonymous(&self, client_id: &str) -> Result<Identity, AuthError> {
        if !self.allow_anonymous {
            return Err(AuthError::new(
                AuthErrorKind::NotAuthorized,
                format!(
                    "anonymous logins are disabled on instance {instance}, so log in with username \
                     Signature|<AccessKeyId>|{instance} and password \
                     Base64(HMAC-SHA1(key = AccessKey secret, message = client id))",
                    instance = self.instance_id,
                ),
            ));
        }
        Ok(Identity {
            principal: ANONYMOUS_PRINCIPAL.to_owned(),
            client_id: client_id.to_owned(),
            username: None,
            mode: None,
        })
    }

    fn check_login(
        &self,
        client_id: &str,
        username: &str,
        password: Option<&[u8]>,
        credentials: Option<&dyn CredentialLookup>,
    ) -> Result<Identity, AuthError> {
        let login = parse_username(username)?;
        if !self.accepts_instance(login.instance_id) {
            return Err(AuthError::new(
                AuthErrorKind::NotAuthorized,
                format!(
                    "username names instance {}, which is neither this instance ({}) nor a \
                     member of its disaster-recovery group, so use the id of this instance or \
                     of a member of its group",
                    quote(login.instance_id),
                    self.instance_id,
                ),
            ));
        }

        let Some(password) = password else {
            return Err(AuthError::new(
                AuthErrorKind::BadUserNameOrPassword,
                format!(
                    "{} login with username {} has no password",
                    login.mode,
                    quote(username)
                ),
            ));
        };

        match login.mode {
            LoginMode::Signature => self.check_signature(&login, client_id, password)?,
            LoginMode::Token => self.check_tokens(&login, password, credentials)?,
            LoginMode::DeviceCredential => {
                check_device_credential(&login, client_id, password, credentials)?
            }
        }

        Ok(Identity {
            principal: format!("{}|{}", login.mode, login.key_id),
            client_id: client_id.to_owned(),
            username: Some(username.to_owned()),
            mode: Some(login.mode),
        })
    }

    /// Looks up the secret of an AccessKey of the owner account.
    fn access_key_secret(&self, login: &Login<'_>) -> Result<&str, AuthError> {
        match self.access_keys.get(login.key_id) {
            Some(secret) => Ok(secret),
            None => Err(AuthError::new(
                AuthErrorKind::BadUserNameOrPassword,
                format!(
                    "AccessKey id {} is not an AccessKey of the account that owns instance {}, \
                     so use an AccessKey id of that account or of one of its RAM users",
                    quote(login.key_id),
                    self.instance_id,
                ),
            )),
        }
    }

    fn check_signature(
        &self,
        login: &Login<'_>,
        client_id: &str,
        password: &[u8],
    ) -> Result<(), AuthError> {
        let secret = self.access_key_secret(login)?;
        if signature_matches(secret, client_id, password) {
            return Ok(());
        }
        Err(AuthError::new(
            AuthErrorKind::BadUserNameOrPassword,
            format!(
                "password does not match the signature of client id {} with AccessKey {}, \
                 which is Base64(HMAC-SHA1(key = AccessKey secret, message = client id)) \
                 over the exact client id",
                quote(client_id),
                quote(login.key_id),
            ),
        ))
    }

    fn check_tokens(
        &self,
        login: &Login<'_>,
        password: &[u8],
        credentials: Option<&dyn CredentialLookup>,
    ) -> Result<(), AuthError> {
        self.access_key_secret(login)?;
        let tokens = parse_token_password(password)?;

        // NOTE: a later token store must also carry each token's topics into the identity, so
        // that check_topic can enforce them. Until then no token login can succeed.
        let Some(credentials) = credentials else {
            return Err(AuthError::new(
                AuthErrorKind::BadUserNameOrPassword,
                format!(
                    "no token matches the password of AccessKey {} because this server does \
                     not issue tokens yet (ApplyToken is not available), so use a Signature \
                     login",
                    quote(login.key_id),
                ),
            ));
        };

        for (kind, token) in tokens {
            if !credentials.token_is_valid(login.instance_id, login.key_id, kind, token) {
                return Err(AuthError::new(
                    AuthErrorKind::BadUserNameOrPassword,
                    format!(
                        "the {} token in the password is not a valid token of AccessKey {} on \
                         instance {} because it is unknown, expired or revoked, so apply for a \
                         new token",
                        kind.as_str(),
                        quote(login.key_id),
                        quote(login.instance_id),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_client_id(&self, client_id: &str) -> Result<(), AuthError> {
        if !self.require_registered_group_ids {
            // An empty client id is the broker's to judge: MQTT assigns one to a 5.0 client and
            // to a 3.1.1 client with Clean Session 1, and rejects the rest with 0x85.
            return Ok(());
        }

        let parsed = parse_client_id(client_id)?;
        if self.group_ids.contains(parsed.group_id) {
            return Ok(());
        }
        Err(AuthError::new(
            AuthErrorKind::ClientIdentifierNotValid,
            format!(
                "Group ID {} of client id {} is not registered on instance {}, and a Group ID \
                 must be registered on the instance (group_ids in its configuration, or the \
                 CreateGroupId action) before clients use it",
                quote(parsed.group_id),
                quote(client_id),
                self.instance_id,
            ),
        ))
    }
}

fn check_device_credential(
    login: &Login<'_>,
    client_id: &str,
    password: &[u8],
    credentials: Option<&dyn CredentialLookup>,
) -> Result<(), AuthError> {
    let secret = credentials.and_then(|credentials| {
        credentials.device_credential_secret(login.instance_id, login.key_id, client_id)
    });
    let Some(secret) = secret else {
        let reason = if credentials.is_none() {
            " because this server does not store device credentials yet \
             (RegisterDeviceCredential is not available), so use a Signature login"
        } else {
            ", so register a device credential for this client id first"
        };
        return Err(AuthError::new(
            AuthErrorKind::BadUserNameOrPassword,
            format!(
                "no device credential with device AccessKey id {} matches client id {} on \
                 instance {}{reason}",
                quote(login.key_id),
                quote(client_id),
                quote(login.instance_id),
            ),
        ));
    };

    if signature_matches(&secret, client_id, password) {
        return Ok(());
    }
    Err(AuthError::new(
        AuthErrorKind::BadUserNameOrPassword,
        format!(
            "password does not match the signature of client id {} with device credential {}, \
             which is Base64(HMAC-SHA1(key = device secret, message = client id))",
            quote(client_id),
            quote(login.key_id),
        ),
    ))
}

/// Parses a Token-mode password: one or more `<type>|<token>` pairs joined by `|`, in any order,
/// with types `R`, `W` and `RW`, at most one token per type.
///
/// Error details never contain a token, because a token is a secret.
fn parse_token_password(password: &[u8]) -> Result<Vec<(TokenKind, &str)>, AuthError> {
    let malformed = |reason: &str| {
        AuthError::new(
            AuthErrorKind::BadUserNameOrPassword,
            format!(
                "Token login password is malformed because {reason}. A Token password is one \
                 or more R|<token>, W|<token> or RW|<token> pairs joined by '|', such as \
                 R|<token>|W|<token>"
            ),
        )
    };

    let Ok(password) = std::str::from_utf8(password) else {
        return Err(malformed("it is not UTF-8"));
    };
    let parts: Vec<&str> = password.split('|').collect();
    if !parts.len().is_multiple_of(2) {
        return Err(malformed("it has an odd number of '|'-separated parts"));
    }

    let mut tokens: Vec<(TokenKind, &str)> = Vec::with_capacity(parts.len() / 2);
    for (index, pair) in parts.chunks_exact(2).enumerate() {
        let [kind, token] = pair else {
            return Err(malformed("it has an odd number of '|'-separated parts"));
        };
        // The type is not quoted, because a client that swapped type and token would see its
        // token in the error.
        let Some(kind) = TokenKind::from_name(kind) else {
            return Err(malformed(&format!(
                "part {} is not a token type (R, W or RW)",
                index * 2 + 1
            )));
        };
        if token.is_empty() {
            return Err(malformed(&format!("the {} token is empty", kind.as_str())));
        }
        if tokens.iter().any(|(seen, _)| *seen == kind) {
            return Err(malformed(&format!(
                "it has more than one {} token",
                kind.as_str()
            )));
        }
        tokens.push((kind, *token));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests;
