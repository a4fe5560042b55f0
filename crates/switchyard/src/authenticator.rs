//! Connects an instance's ApsaraMQ login rules to the broker's authentication hook.

use std::net::SocketAddr;

use switchyard_auth::{InstanceAuthPolicy, TopicAccess};
use switchyard_broker::{Access, Authenticator, Identity};
use switchyard_codec::{Connect, ReasonCode};
use tracing::{debug, info};

/// The broker's [`Authenticator`] for one instance, backed by its [`InstanceAuthPolicy`].
pub struct PolicyAuthenticator {
    policy: InstanceAuthPolicy,
}

impl PolicyAuthenticator {
    pub fn new(policy: InstanceAuthPolicy) -> PolicyAuthenticator {
        PolicyAuthenticator { policy }
    }
}

impl Authenticator for PolicyAuthenticator {
    fn authenticate(&self, connect: &Connect, peer: SocketAddr) -> Result<Identity, ReasonCode> {
        let username = connect.username.as_deref();
        let password = connect.password.as_deref();
        match self
            .policy
            .check_connect(&connect.client_id, username, password)
        {
            Ok(identity) => Ok(Identity {
                principal: identity.principal,
            }),
            Err(err) => {
                info!(
                    instance = %self.policy.instance_id,
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

    fn authorize(&self, identity: &Identity, access: Access, topic_or_filter: &str) -> bool {
        let access = match access {
            Access::Publish => TopicAccess::Publish,
            Access::Subscribe => TopicAccess::Subscribe,
        };
        // Only the principal reaches the broker; the topic rule does not depend on the rest.
        let identity = switchyard_auth::Identity {
            principal: identity.principal.clone(),
            client_id: String::new(),
            mode: None,
        };
        match self.policy.check_topic(&identity, topic_or_filter, access) {
            Ok(()) => true,
            Err(err) => {
                debug!(instance = %self.policy.instance_id, "Rejected topic: {}", err.detail);
                false
            }
        }
    }
}
