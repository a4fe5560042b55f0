//! Publishing in an instance: which sessions a message goes to, with which options, and the
//! retained messages kept for later subscribers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use switchyard_codec::QoS;
use switchyard_store::WriteOp;
use tracing::{debug, warn};

use super::{Instance, Registry, SessionSlot};
use crate::ids::ClientId;
use crate::message::{Delivery, Message};
use crate::persist::{MessageWrite, stored_retained};
use crate::retained::RetainOutcome;
use crate::session::DeliverOutcome;
use crate::shared::{MemberState, SharedGroup};
use crate::subscriptions::Subscriber;

/// The result of [`Instance::publish_with`].
pub(crate) struct Published {
    /// The number of deliveries.
    pub(crate) receivers: usize,
    /// The store write to complete before acknowledging the publisher, if any.
    pub(crate) write: Option<MessageWrite>,
}

impl Instance {
    /// Delivers `message` to every session it is addressed to and returns how many deliveries
    /// there were. A message with RETAIN set also becomes the retained message of its topic
    /// (or deletes it, when the payload is empty).
    ///
    /// A point-to-point topic `<parent>/p2p/<clientId>` goes to that client's session alone,
    /// without a subscription, and is never retained. Any other topic goes to the sessions
    /// whose filters match it, and to one member of each matching shared subscription group.
    /// The publisher never waits for a subscriber: a full queue drops its oldest messages
    /// instead.
    ///
    /// The deliveries are queued under the registry's read lock, so a session handover, which
    /// takes the write lock, sees every message routed to the session before it.
    pub(crate) fn publish(&self, message: Message) -> usize {
        let published = self.publish_with(message, Vec::new());
        if let Some(write) = published.write {
            let instance_id = self.id().to_owned();
            self.tasks().spawn(async move {
                if let Err(error) = write.await {
                    warn!(instance = %instance_id, %error, "Message store write of a will failed");
                }
            });
        }
        published.receivers
    }

    /// Publishes `message` like [`Instance::publish`], and returns the store write that the
    /// publisher's acknowledgement must wait for.
    ///
    /// With a store, one batch contains `ops` (the publisher's own writes, such as its inbound
    /// QoS 2 packet id), the message's QoS 1 and 2 deliveries to stored sessions and the
    /// retained message, so they commit together or not at all. Those deliveries are held
    /// back until the write completes. Without a store, or when nothing needs storing, there
    /// is no write.
    pub(crate) fn publish_with(&self, message: Message, mut ops: Vec<WriteOp>) -> Published {
        let message = Arc::new(message);
        if message.retain && p2p_target(&message.topic).is_none() {
            self.retain(&message, &mut ops);
        }
        let registry = self.read_registry();
        let deliveries = self.route(&registry, &message);
        let receivers = deliveries.len();
        let Some(store) = self.store() else {
            // Without a store the path is the same as before stores existed.
            for (slot, delivery) in deliveries {
                self.deliver(&slot, delivery);
            }
            return Published {
                receivers,
                write: None,
            };
        };
        let gate = Arc::new(AtomicBool::new(true));
        let mut waiting = Vec::new();
        for (slot, delivery) in deliveries {
            let delivery_ops = self.deliver_gated(&slot, delivery, &gate);
            if !delivery_ops.is_empty() {
                ops.extend(delivery_ops);
                waiting.push(slot);
            }
        }
        // Submitted before the registry lock is released, so a session handover, which takes
        // the write lock, commits after this batch and not before its enqueues.
        let write = store
            .submit(ops)
            .map(|future| MessageWrite::new(future, Arc::clone(&gate), waiting));
        drop(registry);
        if write.is_none() {
            gate.store(false, Ordering::Release);
        }
        Published { receivers, write }
    }

    /// Returns the deliveries of the retained messages that match `filter`, for a new
    /// subscription with `subscriber`'s options. They are sent with RETAIN set [MQTT-3.3.1-8 in
    /// 3.1.1] and at most at the subscription's QoS.
    pub(crate) fn retained_deliveries(
        &self,
        filter: &str,
        subscriber: &Subscriber,
        now: Instant,
    ) -> Vec<Delivery> {
        let messages = self.retained.matching(filter, now);
        messages
            .into_iter()
            .map(|message| Delivery {
                qos: message.qos.min(subscriber.options.qos),
                retain: true,
                subscription_ids: subscriber.subscription_id.into_iter().collect(),
                share: None,
                store_pending: None,
                message,
            })
            .collect()
    }

    /// Stores or deletes the retained message of the topic of `message`, adding the store
    /// write to `ops` when the instance has a store.
    fn retain(&self, message: &Arc<Message>, ops: &mut Vec<WriteOp>) {
        let stored = self.store().is_some();
        match self.retained.retain(message) {
            RetainOutcome::Stored if stored => {
                ops.push(WriteOp::PutRetained(stored_retained(message)))
            }
            RetainOutcome::Deleted if stored => ops.push(WriteOp::RemoveRetained {
                topic: message.topic.as_str().to_owned(),
            }),
            RetainOutcome::Stored | RetainOutcome::Deleted => {}
            RetainOutcome::Full { limit } => {
                let rejected = self.retained_rejected.fetch_add(1, Ordering::Relaxed) + 1;
                // Log the 1st, 2nd, 4th, 8th ... rejection so a busy publisher cannot flood
                // the log.
                if rejected.is_power_of_two() {
                    warn!(
                        instance = %self.id(),
                        topic = %message.topic,
                        limit,
                        rejected,
                        "Retained message store full; message delivered but not retained. \
                         Raise max_retained_messages or delete unused retained messages"
                    );
                }
            }
        }
    }

    /// Queues `delivery` in the session of `slot` like [`Instance::deliver`], and returns the
    /// store writes of a stored session instead of submitting them. A QoS 1 or 2 delivery to a
    /// stored session waits for `gate` to clear before it is sent.
    fn deliver_gated(
        &self,
        slot: &SessionSlot,
        mut delivery: Delivery,
        gate: &Arc<AtomicBool>,
    ) -> Vec<WriteOp> {
        let mut session = slot.lock();
        if !session.is_stored() || delivery.qos == QoS::AtMostOnce {
            drop(session);
            self.deliver(slot, delivery);
            return Vec::new();
        }
        // Writes recorded before this delivery go out now, in their order.
        let earlier = self.submit_session_ops(&mut session);
        self.finish_in_background(earlier, "session changes");
        delivery.store_pending = Some(Arc::clone(gate));
        let outcome = session.handle_deliver(delivery);
        let ops = session.take_store_ops();
        drop(session);
        self.log_deliver(slot, outcome);
        ops
    }

    /// Queues `delivery` in the session of `slot`, submits its store writes, if any, and
    /// wakes its writer.
    fn deliver(&self, slot: &SessionSlot, delivery: Delivery) {
        let outcome = {
            let mut session = slot.lock();
            let outcome = session.handle_deliver(delivery);
            let write = self.submit_session_ops(&mut session);
            self.finish_in_background(write, "queued message");
            outcome
        };
        self.log_deliver(slot, outcome);
    }

    /// Wakes the writer of `slot` after a delivery and logs a drop from a full queue.
    fn log_deliver(&self, slot: &SessionSlot, outcome: DeliverOutcome) {
        match outcome {
            DeliverOutcome::Queued => slot.wake.notify_one(),
            DeliverOutcome::QueuedAfterDrop { dropped_total } => {
                slot.wake.notify_one();
                // Log the 1st, 2nd, 4th, 8th ... drop of a session so a stuck client cannot
                // flood the log.
                if dropped_total.is_power_of_two() {
                    let client_id = slot.lock().client_id().clone();
                    warn!(
                        instance = %self.id(),
                        %client_id,
                        dropped_total,
                        "Session queue full; dropped its oldest message"
                    );
                }
            }
            DeliverOutcome::DroppedOffline => {}
        }
    }

    /// Finds the sessions `message` goes to.
    fn route(
        &self,
        registry: &Registry,
        message: &Arc<Message>,
    ) -> Vec<(Arc<SessionSlot>, Delivery)> {
        if let Some(target) = p2p_target(&message.topic) {
            let Some(slot) = registry.sessions.get(target) else {
                debug!(instance = %self.id(), target, "No session for point-to-point message");
                return Vec::new();
            };
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos,
                retain: false,
                subscription_ids: Vec::new(),
                share: None,
                store_pending: None,
            };
            return vec![(Arc::clone(slot), delivery)];
        }

        let matches = registry
            .subscriptions
            .matches(&message.topic, &message.publisher);
        let mut deliveries = Vec::with_capacity(matches.clients.len() + matches.shared.len());
        for (client_id, matched) in matches.clients {
            let Some(slot) = registry.sessions.get(&client_id) else {
                continue;
            };
            let delivery = Delivery {
                message: Arc::clone(message),
                qos: message.qos.min(matched.max_qos),
                retain: message.retain && matched.retain_as_published,
                subscription_ids: matched.subscription_ids,
                share: None,
                store_pending: None,
            };
            deliveries.push((Arc::clone(slot), delivery));
        }
        for group in matches.shared {
            deliveries.extend(choose_member(registry, group, message));
        }
        deliveries
    }

    /// Sends deliveries that a member of a shared subscription gave up to another member of
    /// the same group. A delivery whose group has no member left is dropped.
    pub(super) fn hand_over(&self, registry: &Registry, deliveries: Vec<Delivery>) {
        for delivery in deliveries {
            let Some(share) = &delivery.share else {
                continue;
            };
            let chosen = registry
                .subscriptions
                .shared_group(share)
                .and_then(|group| choose_member(registry, group, &delivery.message));
            match chosen {
                Some((slot, handed_over)) => self.deliver(&slot, handed_over),
                None => debug!(
                    instance = %self.id(),
                    %share,
                    topic = %delivery.message.topic,
                    "Shared subscription has no member left; message dropped"
                ),
            }
        }
    }
}

/// Chooses the member of `group` that receives `message` and builds its delivery.
fn choose_member(
    registry: &Registry,
    group: &SharedGroup,
    message: &Arc<Message>,
) -> Option<(Arc<SessionSlot>, Delivery)> {
    let (client_id, subscriber) =
        group.choose(|client| member_state(&registry.sessions, client))?;
    let slot = registry.sessions.get(client_id)?;
    let delivery = Delivery {
        message: Arc::clone(message),
        qos: message.qos.min(subscriber.options.qos),
        retain: message.retain && subscriber.options.retain_as_published,
        subscription_ids: subscriber.subscription_id.into_iter().collect(),
        share: Some(Arc::clone(group.filter())),
        store_pending: None,
    };
    Some((Arc::clone(slot), delivery))
}

fn member_state(sessions: &HashMap<ClientId, Arc<SessionSlot>>, client: &ClientId) -> MemberState {
    match sessions.get(client) {
        Some(slot) if slot.lock().owner().is_some() => MemberState::Online,
        Some(_) => MemberState::Offline,
        None => MemberState::Missing,
    }
}

/// Returns the target client id of a point-to-point topic `<parent>/p2p/<clientId>`: the second
/// level is exactly `p2p` and the parent and the client id are not empty. The client id is the
/// rest of the topic, so it may contain `/`.
fn p2p_target(topic: &str) -> Option<&str> {
    let mut parts = topic.splitn(3, '/');
    let parent = parts.next()?;
    let marker = parts.next()?;
    let target = parts.next()?;
    let valid = !parent.is_empty() && marker == "p2p" && !target.is_empty();
    valid.then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_target_needs_p2p_second_level() {
        assert_eq!(p2p_target("sensors/p2p/GID_a@@@1"), Some("GID_a@@@1"));
        assert_eq!(p2p_target("sensors/p2p/a/b"), Some("a/b"));
        assert_eq!(p2p_target("sensors/p2p/"), None);
        assert_eq!(p2p_target("sensors/p2p"), None);
        assert_eq!(p2p_target("/p2p/client"), None);
        assert_eq!(p2p_target("sensors/x/p2p/client"), None);
        assert_eq!(p2p_target("sensors/P2P/client"), None);
    }
}
