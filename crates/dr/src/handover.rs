//! Sessions that follow a device from one member of a DR group to another.
//!
//! A device that reaches member B through the group's global endpoint with a persistent-session
//! CONNECT, while B has no session for its client id, resumes the offline session another
//! member holds for it. The session moves as a value, with its subscriptions, queue, messages
//! in flight and QoS 2 state, so QoS 1 and QoS 2 messages acknowledged to publishers while the
//! device was away are delivered on B.
//!
//! With a message store, the removal from the old member and the whole session on the new one
//! commit as one unit before the device gets its CONNACK. A crash at any moment therefore
//! leaves the session stored on exactly one of the two.
//!
//! Limits: only sessions whose last connection came through this group's global endpoint move,
//! and never one whose connection is still up (two devices sharing a client id). Messages
//! published on the old member after the move reach that member's subscribers only, because
//! instances are isolated namespaces.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchyard_broker::{DetachedSession, Origin, SessionHandover};
use tracing::{info, warn};

use crate::members::Group;

/// The [`SessionHandover`] of one device that the global endpoint of `group` sends to the
/// member `target`: it looks for the device's session on the other members, in the group's
/// order.
///
/// Two members can each hold a session of one client id. That happens when the device reaches
/// a member that already has one, which resumes it without asking the others. It also happens
/// when a move does not take place and the device's member starts a new session. A move does
/// not take place when the old session's connection is still up (two devices sharing a client
/// id), when the old session came from a region listener, or when the store failed to commit
/// the move.
///
/// When the device next lands on a member without a session, only the first member in the
/// group's order with an offline global-endpoint session gives it up. Every other copy stays
/// where it is, in memory and in the store, and keeps receiving that member's messages until it
/// expires or its device connects there again. So which copy the device gets depends on the
/// member it lands on. The copies are not merged, because two queues with their own packet ids
/// have no order that is right for both. A warning names each other member that still has a
/// session of the client id after a move.
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
            let adopter = &self.group.member(&self.target)?.instance;
            let others: Vec<_> = self
                .group
                .members
                .iter()
                .filter(|m| m.id() != self.target)
                .collect();
            // NOTE: the first member in order with an offline session gives it up, and any
            // other member with one too keeps its own, as `GroupHandover` describes.
            let mut moved = None;
            for member in &others {
                let Some(session) = member
                    .instance
                    .take_detached_session(client_id, &origin, adopter)
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
                moved = Some((member.id(), session));
                break;
            }
            let (giver, session) = moved?;
            for member in others.iter().filter(|m| m.id() != giver) {
                if member.instance.has_session(client_id) {
                    warn!(
                        group = %self.group.id(),
                        client_id,
                        member = %member.id(),
                        "Another member also has a session of the client id; it stays there"
                    );
                }
            }
            Some(session)
        })
    }
}
