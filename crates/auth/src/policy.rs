//! The login and naming policy of one instance, and the identity a login produces.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::access_rule::AccessRule;
use crate::client_id::{CLIENT_ID_SEPARATOR, ClientId, parse_client_id};
use crate::username::LoginMode;

/// The login and naming rules of one instance.
///
/// The `Debug` output lists AccessKey ids but never their secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceAuthPolicy {
    /// The id of the instance this policy belongs to, such as `mqtt-cn-hz01`.
    pub instance_id: String,
    /// Instance ids a username may name to log in here: this instance and the other members of
    /// its disaster-recovery groups. `instance_id` is accepted even if this set lacks it.
    pub accepted_instance_ids: HashSet<String>,
    /// AccessKey id to secret, for every AccessKey of the instance's owner account (root keys
    /// and RAM users' keys).
    pub access_keys: HashMap<String, String>,
    /// Registered Group IDs, such as `GID_demo`.
    pub group_ids: HashSet<String>,
    /// Registered parent topics (first topic levels), such as `sensors`.
    pub parent_topics: HashSet<String>,
    /// Whether a CONNECT without a username is accepted.
    pub allow_anonymous: bool,
    /// Whether client ids must be `GroupId@@@DeviceId` with a registered Group ID.
    pub require_registered_group_ids: bool,
    /// Whether every topic name and filter must start with a registered parent topic.
    pub require_registered_parent_topics: bool,
    /// Topic access rules in order; the first that applies decides, before the parent-topic
    /// check. Empty by default.
    pub access_rules: Vec<AccessRule>,
}

impl InstanceAuthPolicy {
    /// Creates the cloud product's strict policy for `instance_id`: no anonymous logins,
    /// registered Group IDs and parent topics required, and no keys, Group IDs or parent topics
    /// yet.
    pub fn new(instance_id: impl Into<String>) -> InstanceAuthPolicy {
        let instance_id = instance_id.into();
        InstanceAuthPolicy {
            accepted_instance_ids: HashSet::from([instance_id.clone()]),
            instance_id,
            access_keys: HashMap::new(),
            group_ids: HashSet::new(),
            parent_topics: HashSet::new(),
            allow_anonymous: false,
            require_registered_group_ids: true,
            require_registered_parent_topics: true,
            access_rules: Vec::new(),
        }
    }

    /// Reports whether a username naming `instance_id` may log in on this instance.
    pub fn accepts_instance(&self, instance_id: &str) -> bool {
        instance_id == self.instance_id || self.accepted_instance_ids.contains(instance_id)
    }
}

impl fmt::Debug for InstanceAuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut access_key_ids: Vec<&String> = self.access_keys.keys().collect();
        access_key_ids.sort();
        f.debug_struct("InstanceAuthPolicy")
            .field("instance_id", &self.instance_id)
            .field("accepted_instance_ids", &self.accepted_instance_ids)
            .field("access_key_ids", &access_key_ids)
            .field("group_ids", &self.group_ids)
            .field("parent_topics", &self.parent_topics)
            .field("allow_anonymous", &self.allow_anonymous)
            .field(
                "require_registered_group_ids",
                &self.require_registered_group_ids,
            )
            .field(
                "require_registered_parent_topics",
                &self.require_registered_parent_topics,
            )
            .field("access_rules", &self.access_rules)
            .finish()
    }
}

/// The client behind an accepted CONNECT.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The login's principal: `<Mode>|<KeyId>`, such as `Signature|LTAIexample`, or
    /// `anonymous`.
    pub principal: String,
    /// The client id of the connection.
    pub client_id: String,
    /// The username of the CONNECT, if it had one. Access rules match it and fill in `%u`.
    pub username: Option<String>,
    /// The login mode, or `None` for an anonymous login.
    pub mode: Option<LoginMode>,
}

/// The principal of an anonymous login.
pub const ANONYMOUS_PRINCIPAL: &str = "anonymous";

impl Identity {
    /// Returns the Group ID and device id of the client id, or `None` if the client id is not
    /// a valid `GroupId@@@DeviceId` id.
    ///
    /// An instance that does not require registered Group IDs accepts any non-empty client id,
    /// so this is where a caller finds the Group ID of the clients that do use one.
    pub fn client_id_parts(&self) -> Option<ClientId<'_>> {
        if !self.client_id.contains(CLIENT_ID_SEPARATOR) {
            return None;
        }
        parse_client_id(&self.client_id).ok()
    }
}

/// Whether a topic check is for a PUBLISH or a SUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicAccess {
    /// Publishing to a topic name.
    Publish,
    /// Subscribing to a topic filter.
    Subscribe,
}

impl TopicAccess {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            TopicAccess::Publish => "publish to",
            TopicAccess::Subscribe => "subscribe to",
        }
    }
}

/// The permission a Token-mode token grants, from the type in front of it in the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `R`: subscribe.
    Read,
    /// `W`: publish.
    Write,
    /// `RW`: publish and subscribe.
    ReadWrite,
}

impl TokenKind {
    /// Returns the type as written in a password: `R`, `W` or `RW`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Read => "R",
            TokenKind::Write => "W",
            TokenKind::ReadWrite => "RW",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<TokenKind> {
        match name {
            "R" => Some(TokenKind::Read),
            "W" => Some(TokenKind::Write),
            "RW" => Some(TokenKind::ReadWrite),
            _ => None,
        }
    }
}

/// A source of tokens and device credentials for Token and DeviceCredential logins, passed to
/// [`InstanceAuthPolicy::check_connect_with`].
///
/// The instance id passed to each method is the one named in the username. Within a
/// disaster-recovery group every member must give the same results, because a device may log in
/// on any member with the credentials of another.
pub trait CredentialLookup {
    /// Reports whether `token` is a valid, unexpired token of `kind` that `access_key_id` applied
    /// for on `instance_id`.
    fn token_is_valid(
        &self,
        instance_id: &str,
        access_key_id: &str,
        kind: TokenKind,
        token: &str,
    ) -> bool;

    /// Returns the secret of the device credential `device_access_key_id` on `instance_id` if
    /// that credential is bound to `client_id`.
    fn device_credential_secret(
        &self,
        instance_id: &str,
        device_access_key_id: &str,
        client_id: &str,
    ) -> Option<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_policy_is_strict() {
        let policy = InstanceAuthPolicy::new("mqtt-cn-hz01");
        assert_eq!(policy.instance_id, "mqtt-cn-hz01");
        assert!(policy.accepted_instance_ids.contains("mqtt-cn-hz01"));
        assert!(!policy.allow_anonymous);
        assert!(policy.require_registered_group_ids);
        assert!(policy.require_registered_parent_topics);
    }

    #[test]
    fn accepts_instance_includes_own_id() {
        let mut policy = InstanceAuthPolicy::new("mqtt-cn-hz01");
        policy.accepted_instance_ids.clear();
        assert!(policy.accepts_instance("mqtt-cn-hz01"));
        assert!(!policy.accepts_instance("mqtt-cn-sh01"));

        policy
            .accepted_instance_ids
            .insert("mqtt-cn-sh01".to_owned());
        assert!(policy.accepts_instance("mqtt-cn-sh01"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut policy = InstanceAuthPolicy::new("mqtt-cn-hz01");
        policy
            .access_keys
            .insert("LTAIexample".to_owned(), "very-secret-value".to_owned());
        let output = format!("{policy:?}");
        assert!(output.contains("LTAIexample"), "{output}");
        assert!(!output.contains("very-secret-value"), "{output}");
    }

    #[test]
    fn client_id_parts_of_identity() {
        let identity = |client_id: &str| Identity {
            principal: ANONYMOUS_PRINCIPAL.to_owned(),
            client_id: client_id.to_owned(),
            username: None,
            mode: None,
        };

        let apsaramq = identity("GID_demo@@@dev1");
        let parts = apsaramq.client_id_parts().unwrap();
        assert_eq!(parts.group_id, "GID_demo");
        assert_eq!(parts.device_id, "dev1");

        assert_eq!(identity("plain-client").client_id_parts(), None);
        assert_eq!(identity("GID_x@@@dev1").client_id_parts(), None);
    }

    #[test]
    fn token_kind_names_round_trip() {
        for kind in [TokenKind::Read, TokenKind::Write, TokenKind::ReadWrite] {
            assert_eq!(TokenKind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(TokenKind::from_name("r"), None);
        assert_eq!(TokenKind::from_name("WR"), None);
    }
}
