//! Handlers for the packets a client sends after CONNECT, one function per packet type.

use switchyard_codec::topic::{parse_shared_subscription, validate_topic_filter};
use switchyard_codec::{
    Ack, Disconnect, Packet, Properties, Publish, QoS, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};
use tracing::{debug, trace};

use super::{Close, Connection};
use crate::auth::Access;
use crate::message::Message;
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

    /// Handles PUBLISH: checks it, authorizes it, records inbound QoS 2 state, delivers it and
    /// acknowledges it.
    async fn handle_publish(&mut self, publish: Publish) -> Result<(), Close> {
        self.check_publish(&publish)?;
        let qos = publish.qos;
        let packet_id = publish.packet_id;

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
            return self
                .send(Packet::PubAck(ack_with(
                    id,
                    ReasonCode::PACKET_IDENTIFIER_IN_USE,
                )))
                .await;
        }

        let authorized = self.instance.authenticator().authorize(
            &self.identity,
            Access::Publish,
            &publish.topic,
        );
        if !authorized {
            return self.reject_publish(&publish).await;
        }

        if let (QoS::ExactlyOnce, Some(id)) = (qos, packet_id) {
            // 3.x has no Receive Maximum; the 65,535 packet ids bound the state instead.
            let receive_maximum = if self.version.is_v5() {
                self.instance.settings().receive_maximum.max(1)
            } else {
                u16::MAX
            };
            match self.with_session(|session| session.handle_publish_qos2(id, receive_maximum))? {
                InboundQoS2::New => {}
                InboundQoS2::Duplicate => {
                    debug!(
                        packet_id = id,
                        "Duplicate QoS 2 PUBLISH; not delivered again"
                    );
                    return self.send(Packet::PubRec(Ack::new(id))).await;
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

        let now = tokio::time::Instant::now().into_std();
        let topic = publish.topic.clone();
        let message = Message::from_publish(publish, self.client_id.clone(), now);
        let receivers = self.instance.publish(message);
        debug!(%topic, ?qos, receivers, "Message published");

        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(Ack::new(id))).await,
            (QoS::ExactlyOnce, Some(id)) => self.send(Packet::PubRec(Ack::new(id))).await,
            _ => Ok(()),
        }
    }

    /// Enforces the PUBLISH rules the decoder leaves to the server, for features this server
    /// announced it does not offer.
    fn check_publish(&self, publish: &Publish) -> Result<(), Close> {
        let properties = &publish.properties;
        if !properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6 in 5.0]: only the server sends Subscription Identifiers.
            return Err(Close::violation(
                ReasonCode::PROTOCOL_ERROR,
                "PUBLISH from a client carries a Subscription Identifier",
            ));
        }
        if properties.topic_alias.is_some() {
            return Err(Close::violation(
                ReasonCode::TOPIC_ALIAS_INVALID,
                "PUBLISH uses a Topic Alias, but the server's Topic Alias Maximum is 0",
            ));
        }
        if self.version.is_v5() && publish.retain {
            return Err(Close::violation(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "PUBLISH has RETAIN set, but the server announced Retain Available 0",
            ));
        }
        Ok(())
    }

    /// Rejects a PUBLISH the client may not send. A 5.0 client gets PUBACK or PUBREC 0x87 (not
    /// authorized). 3.x has no reason codes, so a 3.x client is disconnected, as the cloud
    /// product does.
    async fn reject_publish(&self, publish: &Publish) -> Result<(), Close> {
        debug!(
            topic = %publish.topic,
            principal = %self.identity.principal,
            "PUBLISH not authorized"
        );
        if !self.version.is_v5() {
            let detail = format!("not authorized to publish to {}", publish.topic);
            return Err(Close::violation(ReasonCode::NOT_AUTHORIZED, detail));
        }
        let refused = |id| ack_with(id, ReasonCode::NOT_AUTHORIZED);
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.send(Packet::PubAck(refused(id))).await,
            (QoS::ExactlyOnce, Some(id)) => self.send(Packet::PubRec(refused(id))).await,
            _ => Ok(()),
        }
    }

    fn handle_puback(&self, ack: &Ack) -> Result<(), Close> {
        match self.with_session(|session| session.handle_puback(ack.packet_id))? {
            AckOutcome::Accepted => self.wake_writer(),
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBACK for unknown packet id")
            }
        }
        Ok(())
    }

    async fn handle_pubrec(&self, ack: &Ack) -> Result<(), Close> {
        match self.with_session(|session| session.handle_pubrec(ack.packet_id, ack.reason))? {
            AckOutcome::Accepted => {
                self.wake_writer();
                Ok(())
            }
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBREC for unknown packet id");
                // 5.0 replies PUBREL 0x92 (packet identifier not found).
                if self.version.is_v5() {
                    let release = ack_with(ack.packet_id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
                    return self.send(Packet::PubRel(release)).await;
                }
                Ok(())
            }
        }
    }

    /// Handles PUBREL, which releases an inbound QoS 2 packet id, and replies PUBCOMP.
    async fn handle_pubrel(&self, ack: &Ack) -> Result<(), Close> {
        let released = self.with_session(|session| session.handle_pubrel(ack.packet_id))?;
        let reason = if released || !self.version.is_v5() {
            ReasonCode::SUCCESS
        } else {
            debug!(packet_id = ack.packet_id, "PUBREL for unknown packet id");
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(Packet::PubComp(ack_with(ack.packet_id, reason)))
            .await
    }

    fn handle_pubcomp(&self, ack: &Ack) -> Result<(), Close> {
        match self.with_session(|session| session.handle_pubcomp(ack.packet_id))? {
            AckOutcome::Accepted => self.wake_writer(),
            AckOutcome::Unknown => {
                debug!(packet_id = ack.packet_id, "PUBCOMP for unknown packet id");
            }
        }
        Ok(())
    }

    /// Handles SUBSCRIBE and replies SUBACK with one code per filter.
    async fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Close> {
        let subscription_id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut reasons = Vec::with_capacity(subscribe.subscriptions.len());
        for subscription in &subscribe.subscriptions {
            let reason =
                self.subscribe_one(&subscription.filter, subscription.options, subscription_id)?;
            reasons.push(reason);
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties: Properties::default(),
        };
        self.send(Packet::SubAck(suback)).await
    }

    /// Adds one subscription and returns its SUBACK code: the granted QoS or an error, which
    /// the codec writes as 0x80 for 3.1.1.
    fn subscribe_one(
        &self,
        filter: &str,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> Result<ReasonCode, Close> {
        if let Err(error) = validate_topic_filter(filter) {
            debug!(filter, %error, "Invalid topic filter in SUBSCRIBE");
            return Ok(ReasonCode::TOPIC_FILTER_INVALID);
        }
        if matches!(parse_shared_subscription(filter), Ok(Some(_))) {
            debug!(filter, "Shared subscriptions are not supported");
            return Ok(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
        }
        let auth = self.instance.authenticator();
        if !auth.authorize(&self.identity, Access::Subscribe, filter) {
            debug!(filter, principal = %self.identity.principal, "SUBSCRIBE not authorized");
            return Ok(ReasonCode::NOT_AUTHORIZED);
        }
        let subscriber = Subscriber {
            options,
            subscription_id,
        };
        if !self
            .instance
            .subscribe(&self.slot, self.id, filter, subscriber)
        {
            return Err(Close::SessionLost);
        }
        debug!(filter, qos = ?options.qos, "Subscribed");
        Ok(ReasonCode(options.qos as u8))
    }

    /// Handles UNSUBSCRIBE and replies UNSUBACK, whose per-filter codes only 5.0 carries.
    async fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Close> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            if validate_topic_filter(filter).is_err() {
                reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
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
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons,
            properties: Properties::default(),
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

/// Builds an acknowledgement with `reason` and no properties.
fn ack_with(packet_id: u16, reason: ReasonCode) -> Ack {
    Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    }
}
