//! Connects an instance's ApsaraMQ login rules to the broker's authentication hook.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{RwLock, RwLockReadGuard};

use switchyard_auth::{InstanceAuthPolicy, TopicAccess};
use switchyard_broker::{Access, Authenticator, Identity};
use switchyard_codec::{Connect, ReasonCode};
use tracing::{debug, info};

/// The broker's [`Authenticator`] for one instance, backed by its [`InstanceAuthPolicy`].
///
/// The registered Group IDs can be replaced while the instance serves, so that a Group ID
/// created or deleted through the API applies to the next CONNECT. Connections already
/// accepted are not checked again.
pub struct PolicyAuthenticator {
    policy: RwLock<InstanceAuthPolicy>,
}

impl PolicyAuthenticator {
    pub fn new(policy: InstanceAuthPolicy) -> PolicyAuthenticator {
        PolicyAuthenticator {
            policy: RwLock::new(policy),
        }
    }

    /// Replaces the Group IDs that client ids may use.
    pub fn set_group_ids(&self, group_ids: HashSet<String>) {
        let mut policy = self
            .policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        policy.group_ids = group_ids;
    }

    /// Reports whether a CONNECT with a client id of `group_id` passes the Group ID rule.
    #[cfg(test)]
    pub fn accepts_group_id(&self, group_id: &str) -> bool {
        self.policy().group_ids.contains(group_id)
    }

    /// Locks the policy for reading. A panic while the write lock was held cannot leave the
    /// policy half-changed, because the only write replaces one field, so a poisoned lock is
    /// used as it is.
    fn policy(&self) -> RwLockReadGuard<'_, InstanceAuthPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Authenticator for PolicyAuthenticator {
    fn authenticate(&self, connect: &Connect, peer: SocketAddr) -> Result<Identity, ReasonCode> {
        let username = connect.username.as_deref();
        let password = connect.password.as_deref();
        let policy = self.policy();
        match policy.check_connect(&connect.client_id, username, password) {
            Ok(identity) => Ok(Identity::of_connect(identity.principal, connect)),
            Err(err) => {
                info!(
                    instance = %policy.instance_id,
                    client_id = %connect.client_id,
                    %peer,
                    reason = err.reason_code(),
                    "Rejected login: {}",
                    err.detail
                );
                Err(ReasonCode(err.reason_code()))
            }
        }
    }

    fn authorize(
        &self,
        identity: &Identity,
        access: Access,
        topic_or_filter: &str,
    ) -> Result<(), ReasonCode> {
        let access = match access {
            Access::Publish => TopicAccess::Publish,
            Access::Subscribe => TopicAccess::Subscribe,
        };
        // The login mode does not reach the broker, and the topic rules do not depend on it.
        let identity = switchyard_auth::Identity {
            principal: identity.principal.clone(),
            client_id: identity.client_id.clone(),
            username: identity.username.clone(),
            mode: None,
        };
        let policy = self.policy();
        match policy.check_topic(&identity, topic_or_filter, access) {
            Ok(()) => Ok(()),
            Err(err) => {
                debug!(instance = %policy.instance_id, "Rejected topic: {}", err.detail);
                Err(ReasonCode(err.reason_code()))
            }
        }
    }
}
