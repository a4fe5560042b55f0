//! The writer task of a connection: it gathers the reader's replies and the session's packets
//! into one buffer and writes it with one `write_all` per wake-up.
//!
//! The writer also applies the rules that the client set for what it receives (MQTT 5.0):
//! outbound Topic Aliases, Request Problem Information and Maximum Packet Size.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use switchyard_codec::{
    Disconnect, Packet, Properties, ProtocolVersion, Publish, encode_packet, encoded_len,
};
use switchyard_store::StoreFuture;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tracing::{debug, warn};

use crate::ids::ConnectionId;
use crate::instance::SessionSlot;
use crate::message::Delivery;
use crate::persist::InstanceStore;
use crate::session::Session;
use crate::topic_alias::OutboundAliases;

/// A request from the reader to the writer.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A reply to send, such as PUBACK or SUBACK.
    Packet(Packet),
    /// Replies to send in this order, such as the PUBACKs of one store commit.
    Packets(Vec<Packet>),
    /// Retained messages for new subscriptions, queued in the session when the writer reaches
    /// them, so they follow the SUBACK sent before them.
    Deliver(Vec<Delivery>),
    /// Send what is pending, then the DISCONNECT if any, and close the write side.
    Close(Option<Disconnect>),
}

/// The limits a client set in its CONNECT on the packets it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OutboundRules {
    pub(super) version: ProtocolVersion,
    /// The client's Maximum Packet Size in bytes (MQTT 5.0), if it announced one.
    pub(super) max_packet_size: Option<u32>,
    /// False when a 5.0 client set Request Problem Information to 0: then no packet but
    /// PUBLISH, CONNACK and DISCONNECT may carry a Reason String or User Properties
    /// [MQTT-3.1.2-29 in 5.0].
    pub(super) problem_information: bool,
    /// Topic aliases the server may set towards the client; 0 uses none.
    pub(super) topic_alias_maximum: u16,
}

/// A batch stops growing at this many bytes, so a long backlog is written in pieces instead of
/// one large buffer.
const BATCH_BYTES: usize = 64 * 1024;

/// Session packets taken per lock of the session.
const SESSION_PACKETS_PER_LOCK: usize = 64;

/// A buffer that grew past this capacity is released after its write, so an idle connection
/// does not keep the memory of its largest burst.
const IDLE_BUFFER_CAPACITY: usize = 8 * 1024;

/// Writes until the reader sends [`Outgoing::Close`] or drops its sender, or a write fails.
///
/// `buf` contains the packets to send first (the CONNACK). A failed write is logged here, and
/// the reader sees the task end.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    writer: W,
    slot: Arc<SessionSlot>,
    connection: ConnectionId,
    rules: OutboundRules,
    outgoing: mpsc::Receiver<Outgoing>,
    buf: BytesMut,
    store: Option<InstanceStore>,
) -> io::Result<()> {
    let result = write_loop(writer, slot, connection, rules, outgoing, buf, store).await;
    if let Err(error) = &result {
        debug!(%error, "Write failed");
    }
    result
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    slot: Arc<SessionSlot>,
    connection: ConnectionId,
    rules: OutboundRules,
    mut outgoing: mpsc::Receiver<Outgoing>,
    buf: BytesMut,
    store: Option<InstanceStore>,
) -> io::Result<()> {
    let mut batch = Batch {
        buf,
        rules,
        aliases: OutboundAliases::new(rules.topic_alias_maximum),
        slot: Arc::clone(&slot),
        closing: None,
        session_lost: false,
        store,
        store_writes: Vec::new(),
    };

    loop {
        // Replies first, then the session's packets, up to the batch size.
        batch.take_replies(&mut outgoing);
        let more = batch.closing.is_none()
            && !batch.session_lost
            && batch.take_session_packets(&slot, connection);
        let closing = batch.closing.take();
        let close_now = closing.is_some();
        if let Some(Some(disconnect)) = closing {
            batch.add_packet(Packet::Disconnect(disconnect));
        }

        // A QoS 1 or 2 PUBLISH goes out only once its inflight state is stored, so that a
        // restart resends it with the same packet id.
        for write in batch.store_writes.drain(..) {
            if let Err(error) = write.await {
                warn!(%error, "Message store write of outbound messages failed; sending them anyway");
            }
        }
        if !batch.buf.is_empty() {
            writer.write_all(&batch.buf).await?;
            writer.flush().await?;
            batch.buf.clear();
            if batch.buf.capacity() > IDLE_BUFFER_CAPACITY {
                batch.buf = BytesMut::new();
            }
        }
        if close_now {
            return writer.shutdown().await;
        }
        if more {
            continue;
        }

        // Wait for a reply or for the session to have something to send.
        tokio::select! {
            item = outgoing.recv() => batch.add_reply(item),
            () = slot.wake.notified(), if !batch.session_lost => {}
        }
    }
}

/// The packets gathered for the next write.
struct Batch {
    buf: BytesMut,
    rules: OutboundRules,
    aliases: OutboundAliases,
    slot: Arc<SessionSlot>,
    /// Set once the reader asked to close, with the DISCONNECT to send last.
    closing: Option<Option<Disconnect>>,
    /// Set once another connection owns the session; session packets are no longer this
    /// connection's to send.
    session_lost: bool,
    /// The instance's message store, if the instance has one.
    store: Option<InstanceStore>,
    /// The store writes of the session packets in `buf`, to complete before the write.
    store_writes: Vec<StoreFuture<()>>,
}

impl Batch {
    fn take_replies(&mut self, outgoing: &mut mpsc::Receiver<Outgoing>) {
        while self.buf.len() < BATCH_BYTES && self.closing.is_none() {
            match outgoing.try_recv() {
                Ok(item) => self.add_reply(Some(item)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.add_reply(None),
            }
        }
    }

    fn add_reply(&mut self, item: Option<Outgoing>) {
        match item {
            Some(Outgoing::Packet(packet)) => self.add_packet(packet),
            Some(Outgoing::Packets(packets)) => {
                for packet in packets {
                    self.add_packet(packet);
                }
            }
            Some(Outgoing::Deliver(deliveries)) => {
                let slot = Arc::clone(&self.slot);
                let mut session = slot.lock();
                for delivery in deliveries {
                    session.handle_deliver(delivery);
                }
                self.submit_store_ops(&mut session);
            }
            Some(Outgoing::Close(disconnect)) => self.closing = Some(disconnect),
            // The reader is gone without saying how to close.
            None => self.closing = Some(None),
        }
    }

    /// Encodes a reply or the DISCONNECT, unless it cannot be made to fit the client's rules.
    fn add_packet(&mut self, mut packet: Packet) {
        if self.rules.fit(&mut packet) {
            encode_packet(&packet, self.rules.version, &mut self.buf);
        } else {
            debug!(
                packet = packet.name(),
                max_packet_size = ?self.rules.max_packet_size,
                "Packet exceeds the client's Maximum Packet Size; not sent"
            );
        }
    }

    /// Encodes a PUBLISH or PUBREL from the session, giving a PUBLISH a Topic Alias when the
    /// client accepts them. The session has checked the size of the PUBLISH without an alias.
    fn add_session_packet(&mut self, mut packet: Packet) {
        if let Packet::Publish(publish) = &mut packet {
            let rules = self.rules;
            self.aliases
                .apply(publish, |publish| rules.publish_fits(publish));
        }
        encode_packet(&packet, self.rules.version, &mut self.buf);
    }

    /// Submits the store writes the session recorded, while the caller holds its lock.
    fn submit_store_ops(&mut self, session: &mut Session) {
        let Some(store) = &self.store else {
            return;
        };
        if let Some(write) = store.submit(session.take_store_ops()) {
            self.store_writes.push(write);
        }
    }

    /// Adds the session's packets to the batch; returns whether it stopped early because the
    /// batch is full, so more may be waiting.
    fn take_session_packets(&mut self, slot: &SessionSlot, connection: ConnectionId) -> bool {
        let now = tokio::time::Instant::now().into_std();
        while self.buf.len() < BATCH_BYTES {
            let mut packets = Vec::new();
            {
                let mut session = slot.lock();
                if !session.is_owned_by(connection) {
                    drop(session);
                    self.session_lost = true;
                    // This task may have taken the wake-up meant for the new owner's writer.
                    slot.wake.notify_one();
                    return false;
                }
                while packets.len() < SESSION_PACKETS_PER_LOCK {
                    match session.poll_transmit(now) {
                        Some(packet) => packets.push(packet),
                        None => break,
                    }
                }
                self.submit_store_ops(&mut session);
            }
            let drained = packets.len() < SESSION_PACKETS_PER_LOCK;
            for packet in packets {
                self.add_session_packet(packet);
            }
            if drained {
                return false;
            }
        }
        true
    }
}

// === impl OutboundRules ===

impl OutboundRules {
    /// Makes `packet` acceptable to the client, returning `false` when it cannot be.
    ///
    /// Without problem information, Reason Strings and User Properties are removed from every
    /// packet but PUBLISH, CONNACK and DISCONNECT. A packet over the client's Maximum Packet Size
    /// loses its Reason String and User Properties, then a DISCONNECT its Server Reference, and
    /// if it is still too large it must not be sent at all [MQTT-3.1.2-24 in 5.0].
    pub(super) fn fit(&self, packet: &mut Packet) -> bool {
        if !self.version.is_v5() {
            return true;
        }
        let problem_information_allowed = matches!(
            packet,
            Packet::Publish(_) | Packet::ConnAck(_) | Packet::Disconnect(_)
        );
        if !self.problem_information
            && !problem_information_allowed
            && let Some(properties) = properties_mut(packet)
        {
            remove_problem_information(properties);
        }
        let Some(max) = self.max_packet_size else {
            return true;
        };
        if self.packet_fits(packet, max) {
            return true;
        }
        if !matches!(packet, Packet::Publish(_))
            && let Some(properties) = properties_mut(packet)
        {
            remove_problem_information(properties);
        }
        if self.packet_fits(packet, max) {
            return true;
        }
        match packet {
            Packet::Disconnect(disconnect) => disconnect.properties.server_reference = None,
            // Retain Available 1 and Shared Subscription Available 1 mean what their absence
            // means.
            Packet::ConnAck(connack) => {
                let properties = &mut connack.properties;
                properties.retain_available = properties.retain_available.filter(|v| *v != 1);
                properties.shared_subscription_available =
                    properties.shared_subscription_available.filter(|v| *v != 1);
            }
            _ => {}
        }
        self.packet_fits(packet, max)
    }

    /// Reports whether `publish` fits the client's Maximum Packet Size.
    fn publish_fits(&self, publish: &Publish) -> bool {
        match self.max_packet_size {
            Some(max) => self.packet_fits(&Packet::Publish(publish.clone()), max),
            None => true,
        }
    }

    fn packet_fits(&self, packet: &Packet, max: u32) -> bool {
        encoded_len(packet, self.version) <= max as usize
    }
}

/// Returns the properties of a packet type that has any.
fn properties_mut(packet: &mut Packet) -> Option<&mut Properties> {
    match packet {
        Packet::ConnAck(connack) => Some(&mut connack.properties),
        Packet::Publish(publish) => Some(&mut publish.properties),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            Some(&mut ack.properties)
        }
        Packet::SubAck(suback) => Some(&mut suback.properties),
        Packet::UnsubAck(unsuback) => Some(&mut unsuback.properties),
        Packet::Disconnect(disconnect) => Some(&mut disconnect.properties),
        Packet::Auth(auth) => Some(&mut auth.properties),
        Packet::Connect(_)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::PingReq
        | Packet::PingResp => None,
    }
}

fn remove_problem_information(properties: &mut Properties) {
    properties.reason_string = None;
    properties.user_properties = Vec::new();
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchyard_codec::{Ack, ByteStr, QoS, ReasonCode, SubAck};

    use super::*;

    fn rules(max_packet_size: Option<u32>, problem_information: bool) -> OutboundRules {
        OutboundRules {
            version: ProtocolVersion::V5,
            max_packet_size,
            problem_information,
            topic_alias_maximum: 0,
        }
    }

    fn with_problem_information() -> Properties {
        Properties {
            reason_string: Some(ByteStr::from("not authorized to publish to a/b")),
            user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
            ..Properties::default()
        }
    }

    #[test]
    fn no_problem_information_strips_acknowledgements() {
        let mut puback = Packet::PubAck(Ack {
            packet_id: 1,
            reason: ReasonCode::NOT_AUTHORIZED,
            properties: with_problem_information(),
        });
        assert!(rules(None, false).fit(&mut puback));
        let Packet::PubAck(ack) = &puback else {
            panic!("expected PUBACK");
        };
        assert_eq!(ack.properties.reason_string, None);
        assert!(ack.properties.user_properties.is_empty());
        assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED);
    }

    #[test]
    fn no_problem_information_keeps_publish_and_disconnect() {
        let mut publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteStr::from("a/b"),
            packet_id: None,
            properties: with_problem_information(),
            payload: Bytes::from_static(b"x"),
        });
        assert!(rules(None, false).fit(&mut publish));
        let Packet::Publish(kept) = &publish else {
            panic!("expected PUBLISH");
        };
        assert_eq!(kept.properties.user_properties.len(), 1);

        let mut disconnect = Packet::Disconnect(Disconnect {
            reason: ReasonCode::PROTOCOL_ERROR,
            properties: with_problem_information(),
        });
        assert!(rules(None, false).fit(&mut disconnect));
        let Packet::Disconnect(kept) = &disconnect else {
            panic!("expected DISCONNECT");
        };
        assert!(kept.properties.reason_string.is_some());
    }

    #[test]
    fn oversized_reply_loses_reason_string_first() {
        let mut suback = Packet::SubAck(SubAck {
            packet_id: 1,
            reasons: vec![ReasonCode::TOPIC_FILTER_INVALID],
            properties: with_problem_information(),
        });
        assert!(rules(Some(16), true).fit(&mut suback));
        let Packet::SubAck(kept) = &suback else {
            panic!("expected SUBACK");
        };
        assert_eq!(kept.properties.reason_string, None);
        assert_eq!(kept.reasons, [ReasonCode::TOPIC_FILTER_INVALID]);
    }

    #[test]
    fn oversized_disconnect_drops_server_reference() {
        let mut disconnect = Packet::Disconnect(Disconnect {
            reason: ReasonCode::USE_ANOTHER_SERVER,
            properties: Properties {
                server_reference: Some(ByteStr::from("x".repeat(100))),
                ..Properties::default()
            },
        });
        assert!(rules(Some(16), true).fit(&mut disconnect));
        let Packet::Disconnect(kept) = &disconnect else {
            panic!("expected DISCONNECT");
        };
        assert_eq!(kept.properties.server_reference, None);
        assert_eq!(kept.reason, ReasonCode::USE_ANOTHER_SERVER);
    }

    #[test]
    fn packet_that_cannot_fit_is_refused() {
        let mut suback = Packet::SubAck(SubAck {
            packet_id: 1,
            reasons: vec![ReasonCode::GRANTED_QOS_0; 40],
            properties: Properties::default(),
        });
        assert!(!rules(Some(16), true).fit(&mut suback));
    }

    #[test]
    fn oversized_connack_drops_default_announcements() {
        let mut connack = Packet::ConnAck(switchyard_codec::ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                retain_available: Some(1),
                shared_subscription_available: Some(1),
                topic_alias_maximum: Some(10),
                ..Properties::default()
            },
        });
        assert!(rules(Some(9), true).fit(&mut connack));
        let Packet::ConnAck(kept) = &connack else {
            panic!("expected CONNACK");
        };
        assert_eq!(kept.properties.retain_available, None);
        assert_eq!(kept.properties.shared_subscription_available, None);
        assert_eq!(kept.properties.topic_alias_maximum, Some(10));
    }

    #[test]
    fn v3_packets_are_left_alone() {
        let mut rules = rules(Some(2), false);
        rules.version = ProtocolVersion::V3_1_1;
        let mut pingresp = Packet::PingResp;
        assert!(rules.fit(&mut pingresp));
    }
}
