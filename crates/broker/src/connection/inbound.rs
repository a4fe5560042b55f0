//! Handlers for the packets a client sends after CONNECT, one function per packet type.

use std::time::Instant;

use switchyard_codec::topic::{parse_shared_subscription, validate_topic_filter};
use switchyard_codec::{
    Ack, ByteStr, Disconnect, Packet, Properties, Publish, QoS, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use tracing::{debug, trace, warn};

use super::acks::{Pending, PendingAck, Settled};
use super::writer::Outgoing;
use super::{Close, Connection};
use crate::auth::Access;
use crate::instance::SubscribeOutcome;
use crate::message::{Delivery, Message};
use crate::session::{AckOutcome, InboundQoS2};
use crate::subscriptions::Subscriber;

// === impl Connection ===

impl Connection {
    /// Handles one packet; an error ends the connection.
    pub(super) async fn handle_packet(&mut self, packet: Packet) -> Result<(), Close> {
        trace!(packet = packet.name(), "Packet received");
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish).await,
            Packet::PubAck(ack) => self.handle_puback(&ack),
            Packet::PubRec(ack) => self.handle_pubrec(&ack).await,
            Packet::PubRel(ack) => self.handle_pubrel(&ack).await,
            Packet::PubComp(ack) => self.handle_pubcomp(&ack),
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe).await,
            Packet::PingReq => self.send(Packet::PingResp).await,
            Packet::Disconnect(disconnect) => Err(self.handle_disconnect(&disconnect)),
            // [MQTT-3.1.0-2 in 3.1.1 and 5.0]: a second CONNECT is a protocol violation.
            Packet::Connect(_) => Err(Close::violation(
                ReasonCode::PROTOCOL_ERROR,
                "second CONNECT on a connection",
            )),
            Packet::Auth(_) => Err(Close::violation(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method in CONNECT",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                let detail = format!("{} is sent only by servers", packet.name());
                Err(Close::violation(ReasonCode::PROTOCOL_ERROR, detail))
            }
        }
    }

    /// Handles PUBLISH: resolves its Topic Alias, checks it, authorizes it, records inbound
    /// QoS 2 state, delivers it and acknowledges it.
    async fn handle_publish(&mut self, mut publish: Publish) -> Result<(), Close> {
        let now = tokio::time::Instant::now().into_std();
        if !self.publish_rate.try_acquire(now) {
            let rate = self.instance.settings().max_publish_rate;
            let detail = format!("more than {rate} PUBLISH packets per second");
            return Err(Close::violation(ReasonCode::MESSAGE_RATE_TOO_HIGH, detail));
        }
        if let Err(error) = self.inbound_aliases.resolve(&mut publish) {
            return Err(Close::violation(error.reason, error.detail));
        }
        check_publish(&publish)?;
        if let Err(problem) = self.instance.settings().check_topic(&publish.topic) {
            let detail = format!("topic {:?} {problem}", publish.topic.as_str());
            return self
                .reject_publish(&publish, ReasonCode::TOPIC_NAME_INVALID, detail)
                .await;
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;

        // Only a resend or a client error reuses the packet id of a PUBLISH whose reply is
        // pending. This PUBLISH is handled after that reply, as if it had arrived after it.
        if let Some(id) = packet_id {
            self.settle_through(id).await?;
        }

        // A QoS 1 PUBLISH must not reuse the id of a QoS 2 message awaiting PUBREL, because
        // the id stays in use until PUBCOMP.
        if let (QoS::AtLeastOnce, Some(id)) = (qos, packet_id)
            && self.with_session(|session| session.is_inbound_unreleased(id))?
        {
            if !self.version.is_v5() {
                let detail =
                    format!("QoS 1 PUBLISH reuses packet id {id} of an unreleased QoS 2 message");
                return Err(Close::violation(ReasonCode::PROTOCOL_ERROR, detail));
            }
            let detail = format!("packet id {id} is in use by a QoS 2 message awaiting PUBREL");
            let reply = ack_with(id, ReasonCode::PACKET_IDENTIFIER_IN_USE, Some(detail));
            return self.send_publish_reply(id, Packet::PubAck(reply)).await;
        }

        let authorized = self.instance.authenticator().authorize(
            &self.identity,
            Access::Publish,
            &publish.topic,
        );
        if let Err(reason) = authorized {
            debug!(
                topic = %publish.topic,
                principal = %self.identity.principal,
                ?reason,
                "PUBLISH not authorized"
            );
            let detail = format!("not authorized to publish to {}", publish.topic);
            return self.reject_publish(&publish, reason, detail).await;
        }

        // The publisher's own store writes (its inbound QoS 2 packet id) commit with the
        // message's deliveries, so a crash keeps both or neither.
        let mut own_ops = Vec::new();
        if let (QoS::ExactlyOnce, Some(id)) = (qos, packet_id) {
            // 3.x has no Receive Maximum; the 65,535 packet ids bound the state instead.
            let receive_maximum = if self.version.is_v5() {
                self.instance.settings().receive_maximum.max(1)
            } else {
                u16::MAX
            };
            // Writes recorded before this PUBLISH go out first, in their order.
            let (_, earlier) = self.with_stored_session(|_| ())?;
            self.instance
                .finish_in_background(earlier, "session changes");
            let (outcome, ops) = self.with_session(|session| {
                let outcome = session.handle_publish_qos2(id, receive_maximum);
                (outcome, session.take_store_ops())
            })?;
            match outcome {
                InboundQoS2::New => own_ops = ops,
                InboundQoS2::Duplicate => {
                    debug!(
                        packet_id = id,
                        "Duplicate QoS 2 PUBLISH; not delivered again"
                    );
                    return self
                        .send_publish_reply(id, Packet::PubRec(Ack::new(id)))
                        .await;
                }
                InboundQoS2::WindowExceeded => {
                    let detail = format!("more than {receive_maximum} QoS 2 messages unreleased");
                    return Err(Close::violation(
                        ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                        detail,
                    ));
                }
            }
        }

        let topic = publish.topic.clone();
        let message = Message::from_publish(publish, self.client_id.clone(), now);
        let published = self.instance.publish_with(message, own_ops);
        let receivers = published.receivers;
        debug!(%topic, ?qos, receivers, "Message published");

        // The acknowledgement promises the message is stored wherever it must be, so it waits
        // for the write, while the reader goes on with the next packet.
        if let Some(write) = published.write {
            self.pending_acks.push(PendingAck {
                packet_id,
                kind: Pending::Write { qos, topic, write },
            });
            return Ok(());
        }
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.send_publish_reply(id, Packet::PubAck(Ack::new(id)))
                    .await
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.send_publish_reply(id, Packet::PubRec(Ack::new(id)))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Sends `reply` to the PUBLISH with `packet_id` once the replies to earlier PUBLISH
    /// packets have gone out.
    async fn send_publish_reply(&mut self, packet_id: u16, reply: Packet) -> Result<(), Close> {
        if self.pending_acks.is_empty() {
            return self.send(reply).await;
        }
        self.pending_acks.push(PendingAck {
            packet_id: Some(packet_id),
            kind: Pending::Ready(Box::new(reply)),
        });
        Ok(())
    }

    /// Sends the reply of `settled`, together with the replies behind it that are due too.
    pub(super) async fn send_settled(&mut self, settled: Settled) -> Result<(), Close> {
        let mut replies = Vec::new();
        let mut next = Some(settled);
        while let Some(settled) = next {
            match self.settled_reply(settled) {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => {}
                Err(close) => {
                    self.acks_stopped = true;
                    self.send_replies(replies).await?;
                    return Err(close);
                }
            }
            next = self.pending_acks.try_next();
        }
        self.send_replies(replies).await
    }

    async fn send_replies(&self, mut replies: Vec<Packet>) -> Result<(), Close> {
        match replies.len() {
            0 => Ok(()),
            1 => match replies.pop() {
                Some(reply) => self.send(reply).await,
                None => Ok(()),
            },
            _ => self.send_outgoing(Outgoing::Packets(replies)).await,
        }
    }

    /// Waits for the pending replies up to the one of the PUBLISH with `packet_id`, if any,
    /// and sends them.
    async fn settle_through(&mut self, packet_id: u16) -> Result<(), Close> {
        while self.pending_acks.contains(packet_id) {
            let Some(settled) = self.pending_acks.next().await else {
                break;
            };
            self.send_settled(settled).await?;
        }
        Ok(())
    }

    /// Waits for every pending reply and returns the replies to send before the connection
    /// closes: none after a failed store write ended a 3.x connection.
    pub(super) async fn settle_all(&mut self) -> Vec<Packet> {
        let mut replies = Vec::new();
        while let Some(settled) = self.pending_acks.next().await {
            match self.settled_reply(settled) {
                Ok(Some(reply)) if !self.acks_stopped => replies.push(reply),
                Ok(_) => {}
                Err(_) => self.acks_stopped = true,
            }
        }
        replies
    }

    /// Returns the reply to a PUBLISH that is due. After a failed store write a 5.0 client
    /// gets an error reason code, and a 3.x connection ends because 3.x has none.
    fn settled_reply(&self, settled: Settled) -> Result<Option<Packet>, Close> {
        let (packet_id, qos, topic, result) = match settled {
            Settled::Ready(reply) => return Ok(Some(*reply)),
            Settled::Written {
                packet_id,
                qos,
                topic,
                result,
            } => (packet_id, qos, topic, result),
        };
        let Err(error) = result else {
            return Ok(match (qos, packet_id) {
                (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::new(id))),
                (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(Ack::new(id))),
                _ => None,
            });
        };
        warn!(%topic, %error, "Message store write failed; publish not acknowledged");
        if !self.version.is_v5() {
            let detail = format!("failed to store the message: {error}");
            return Err(Close::violation(ReasonCode::UNSPECIFIED_ERROR, detail));
        }
        let reason = if error.is_quota_exceeded() {
            ReasonCode::QUOTA_EXCEEDED
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        let detail = Some(format!("failed to store the message: {error}"));
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Ok(Some(Packet::PubAck(ack_with(id, reason, detail)))),
            (QoS::ExactlyOnce, Some(id)) => {
                // The packet id is released, so the client may send the message again.
                let (_, write) = self.with_stored_session(|session| session.handle_pubrel(id))?;
                self.instance
                    .finish_in_background(write, "release packet id");
                Ok(Some(Packet::PubRec(ack_with(id, reason, detail))))
            }
            _ => Ok(None),
        }
    }

    /// Rejects a PUBLISH the client may not send, such as one that is not authorized (0x87) or
    /// whose topic is over the instance's limits (0x90). A 5.0 client gets PUBACK or PUBREC
    /// with `reason`, and nothing at QoS 0. 3.x has no reason codes, so a 3.x client is
    /// disconnected, as the cloud product does.
    async fn reject_publish(
        &mut self,
        publish: &Publish,
        reason: ReasonCode,
        detail: String,
    ) -> Result<(), Close> {
        if !self.version.is_v5() {
            return Err(Close::violation(reason, detail));
        }
        debug!(topic = %publish.topic, %detail, "PUBLISH rejected");
        let refused = |id| ack_with(id, reason, Some(detail));
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.send_publish_reply(id, Packet::PubAck(refused(id)))
                    .await
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.send_publish_reply(id, Packet::PubRec(refused(id)))
                    .await
            }
            _ => Ok(()),
        }
    }

    fn handle_puback(&self, ack: &Ack) -> Result<(), Close> {
        let (outcome, write) =
            self.with_stored_session(|session| session.handle_puback(ack.packet_id))?;
        self.instance.finish_in_background(write, "PUBACK");
        match outcome {
            AckOutcome::Accepted => self.wake_writer(),
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBACK for unknown packet id")
            }
        }
        Ok(())
    }

    async fn handle_pubrec(&self, ack: &Ack) -> Result<(), Close> {
        let (outcome, write) =
            self.with_stored_session(|session| session.handle_pubrec(ack.packet_id, ack.reason))?;
        match outcome {
            AckOutcome::Accepted => {
                // PUBREL goes out only once the store knows the PUBLISH arrived, so that a
                // restart never sends the PUBLISH again after its PUBREL.
                self.wait_store(write, "PUBREC").await;
                self.wake_writer();
                Ok(())
            }
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBREC for unknown packet id");
                // 5.0 replies PUBREL 0x92 (packet identifier not found).
                if self.version.is_v5() {
                    let detail =
                        format!("no QoS 2 message in flight has packet id {}", ack.packet_id);
                    let release = ack_with(
                        ack.packet_id,
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        Some(detail),
                    );
                    return self.send(Packet::PubRel(release)).await;
                }
                Ok(())
            }
        }
    }

    /// Handles PUBREL, which releases an inbound QoS 2 packet id, and replies PUBCOMP.
    async fn handle_pubrel(&mut self, ack: &Ack) -> Result<(), Close> {
        // A client sends PUBREL only after PUBREC, so one for a PUBLISH whose PUBREC is still
        // pending is a client error. It is handled after that PUBREC, which keeps PUBREC
        // before PUBCOMP and, after a failed write, finds the packet id released.
        self.settle_through(ack.packet_id).await?;
        let (released, write) =
            self.with_stored_session(|session| session.handle_pubrel(ack.packet_id))?;
        // After PUBCOMP the client may reuse the packet id, so the store must have released it.
        self.wait_store(write, "PUBREL").await;
        let completion = if released || !self.version.is_v5() {
            Ack::new(ack.packet_id)
        } else {
            debug!(packet_id = ack.packet_id, "PUBREL for unknown packet id");
            let detail = format!(
                "no QoS 2 message awaits PUBREL with packet id {}",
                ack.packet_id
            );
            ack_with(
                ack.packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                Some(detail),
            )
        };
        self.send(Packet::PubComp(completion)).await
    }

    fn handle_pubcomp(&self, ack: &Ack) -> Result<(), Close> {
        let (outcome, write) =
            self.with_stored_session(|session| session.handle_pubcomp(ack.packet_id))?;
        self.instance.finish_in_background(write, "PUBCOMP");
        match outcome {
            AckOutcome::Accepted => self.wake_writer(),
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBCOMP for unknown packet id");
            }
        }
        Ok(())
    }

    /// Handles SUBSCRIBE and replies SUBACK with one code per filter, then queues the retained
    /// messages the new subscriptions receive, so they follow the SUBACK.
    async fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let subscription_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let now = tokio::time::Instant::now().into_std();
        let mut reasons = Vec::with_capacity(subscribe.subscriptions.len());
        let mut problems = Vec::new();
        let mut retained = Vec::new();
        for subscription in &subscribe.subscriptions {
            let filter = &subscription.filter;
            let outcome = self.subscribe_one(filter, subscription.options, subscription_id, now)?;
            match outcome {
                Subscribed::Granted(qos, deliveries) => {
                    reasons.push(ReasonCode(qos as u8));
                    retained.extend(deliveries);
                }
                Subscribed::Refused(reason, problem) => {
                    reasons.push(reason);
                    problems.push(format!("topic filter {:?} {problem}", filter.as_str()));
                }
            }
        }
        // The subscriptions of a persistent session are stored before SUBACK.
        let (_, write) = self.with_stored_session(|_| ())?;
        self.wait_store(write, "SUBSCRIBE").await;
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties: reason_string((!problems.is_empty()).then(|| problems.join("; "))),
        };
        self.send(Packet::SubAck(suback)).await?;
        if retained.is_empty() {
            return Ok(());
        }
        self.send_outgoing(Outgoing::Deliver(retained)).await
    }

    /// Adds one subscription and returns its SUBACK outcome with the retained messages it
    /// receives, or the error code (which the codec writes as 0x80 for 3.1.1) and why.
    ///
    /// A shared subscription is authorized by its topic filter without the `$share/<group>/`
    /// prefix, because that is the set of topics it reads.
    fn subscribe_one(
        &self,
        filter: &str,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
        now: Instant,
    ) -> Result<Subscribed, Close> {
        if let Err(error) = validate_topic_filter(filter) {
            debug!(filter, %error, "Invalid topic filter in SUBSCRIBE");
            let problem = format!("is invalid: {error}");
            return Ok(Subscribed::Refused(
                ReasonCode::TOPIC_FILTER_INVALID,
                problem,
            ));
        }
        if let Err(problem) = self.instance.settings().check_topic(filter) {
            debug!(filter, problem, "Topic filter over the instance's limits");
            return Ok(Subscribed::Refused(
                ReasonCode::TOPIC_FILTER_INVALID,
                problem,
            ));
        }
        let shared = parse_shared_subscription(filter).ok().flatten();
        let topics = shared.map_or(filter, |shared| shared.filter);
        let auth = self.instance.authenticator();
        if let Err(reason) = auth.authorize(&self.identity, Access::Subscribe, topics) {
            debug!(
                filter,
                principal = %self.identity.principal,
                ?reason,
                "SUBSCRIBE not authorized"
            );
            let problem = "is not authorized".to_owned();
            return Ok(Subscribed::Refused(reason, problem));
        }
        let subscriber = Subscriber {
            options,
            subscription_id,
        };
        let replaced = match self
            .instance
            .subscribe(&self.slot, self.id, filter, subscriber)
        {
            SubscribeOutcome::Subscribed { replaced } => replaced,
            SubscribeOutcome::QuotaExceeded => {
                let max = self.instance.settings().max_subscriptions_per_client;
                debug!(filter, max, "Subscription quota exceeded");
                let problem = format!("exceeds the maximum of {max} subscriptions per client");
                return Ok(Subscribed::Refused(ReasonCode::QUOTA_EXCEEDED, problem));
            }
            SubscribeOutcome::SessionLost => return Err(Close::SessionLost),
        };
        debug!(filter, qos = ?options.qos, "Subscribed");

        // Retain Handling 0 sends the retained messages on every SUBSCRIBE, 1 only for a new
        // subscription, 2 never [MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11 in 5.0]. 3.x always
        // uses 0. Shared subscriptions receive no retained messages.
        let wanted = match options.retain_handling {
            0 => true,
            1 => !replaced,
            _ => false,
        };
        let retained = if wanted && shared.is_none() {
            self.instance.retained_deliveries(filter, &subscriber, now)
        } else {
            Vec::new()
        };
        Ok(Subscribed::Granted(options.qos, retained))
    }

    /// Handles UNSUBSCRIBE and replies UNSUBACK, whose per-filter codes only 5.0 carries.
    async fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut problems = Vec::new();
        for filter in &unsubscribe.filters {
            if let Err(error) = validate_topic_filter(filter) {
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                problems.push(format!(
                    "topic filter {:?} is invalid: {error}",
                    filter.as_str()
                ));
                continue;
            }
            let existed = self.instance.unsubscribe(&self.slot, self.id, filter);
            let reason = match existed {
                Some(true) => ReasonCode::SUCCESS,
                Some(false) => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                None => return Err(Close::SessionLost),
            };
            reasons.push(reason);
        }
        let (_, write) = self.with_stored_session(|_| ())?;
        self.wait_store(write, "UNSUBSCRIBE").await;
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons,
            properties: reason_string((!problems.is_empty()).then(|| problems.join("; "))),
        };
        self.send(Packet::UnsubAck(unsuback)).await
    }

    /// Handles DISCONNECT, applying a 5.0 Session Expiry Interval it carries.
    fn handle_disconnect(&self, disconnect: &Disconnect) -> Close {
        let Some(expiry) = disconnect.properties.session_expiry_interval else {
            return Close::Disconnected(disconnect.reason);
        };
        // A client whose CONNECT asked for expiry 0 may not set one now (5.0 section
        // 3.14.2.2.2).
        if self.requested_session_expiry == 0 && expiry != 0 {
            return Close::violation(
                ReasonCode::PROTOCOL_ERROR,
                "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
            );
        }
        let granted = expiry.min(self.instance.settings().max_session_expiry);
        match self.with_session(|session| session.handle_expiry_interval(granted)) {
            Ok(()) => Close::Disconnected(disconnect.reason),
            Err(close) => close,
        }
    }
}

/// The outcome of one topic filter of SUBSCRIBE.
enum Subscribed {
    /// Subscribed at this QoS; the retained messages to send follow.
    Granted(QoS, Vec<Delivery>),
    /// Refused with this SUBACK code, and what is wrong with the filter.
    Refused(ReasonCode, String),
}

/// Enforces the PUBLISH rules the decoder leaves to the server.
fn check_publish(publish: &Publish) -> Result<(), Close> {
    if !publish.properties.subscription_identifiers.is_empty() {
        // [MQTT-3.3.4-6 in 5.0]: only the server sends Subscription Identifiers.
        return Err(Close::violation(
            ReasonCode::PROTOCOL_ERROR,
            "PUBLISH from a client carries a Subscription Identifier",
        ));
    }
    Ok(())
}

/// Builds an acknowledgement with `reason` and, for an error, a Reason String with the cause.
/// The writer removes the Reason String for a client that requested no problem information.
fn ack_with(packet_id: u16, reason: ReasonCode, detail: Option<String>) -> Ack {
    Ack {
        packet_id,
        reason,
        properties: reason_string(detail),
    }
}

/// Builds properties that carry only a Reason String, if any.
fn reason_string(detail: Option<String>) -> Properties {
    Properties {
        reason_string: detail.map(ByteStr::from),
        ..Properties::default()
    }
}
