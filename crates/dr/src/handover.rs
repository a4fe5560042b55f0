//! Sessions that follow a device from one member of a DR group to another.
//!
//! A device that reaches member B through the group's global endpoint with a persistent-session
//! CONNECT, while B has no session for its client id, resumes the offline session another
//! member holds for it. The session moves as a value, with its subscriptions, queue, messages
//! in flight and QoS 2 state, so QoS 1 and QoS 2 messages acknowledged to publishers while the
//! device was away are delivered on B.
//!
//! Limits: only sessions whose last connection came through this group's global endpoint move,
//! and never one whose connection is still up (two devices sharing a client id). Messages
//! published on the old member after the move reach that member's subscribers only, because
//! instances are isolated namespaces.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchyard_broker::{DetachedSession, Origin, SessionHandover};
use tracing::info;

use crate::members::Group;

/// The [`SessionHandover`] of one device that the global endpoint of `group` sends to the
/// member `target`: it looks for the device's session on the other members, in the group's
/// order.
pub struct GroupHandover {
    group: Arc<Group>,
    target: String,
}

impl GroupHandover {
    pub fn new(group: Arc<Group>, target: &str) -> GroupHandover {
        GroupHandover {
            group,
            target: target.to_owned(),
        }
    }
}

impl SessionHandover for GroupHandover {
    fn take_session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<DetachedSession>> + Send + 'a>> {
        Box::pin(async move {
            let origin = Origin::Global {
                group: self.group.id().to_owned(),
            };
            let others = self.group.members.iter().filter(|m| m.id() != self.target);
            // NOTE: the first member in order with an offline session gives it up. A second
            // member holding one too, possible only after region-endpoint use, keeps its own
            // until it expires.
            for member in others {
                let Some(session) = member
                    .instance
                    .take_detached_session(client_id, &origin)
                    .await
                else {
                    continue;
                };
                info!(
                    group = %self.group.id(),
                    client_id,
                    from = %member.id(),
                    to = %self.target,
                    "Moving session between members"
                );
                return Some(session);
            }
            None
        })
    }
}
