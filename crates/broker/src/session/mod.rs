//! The MQTT session as a sans-I/O state machine, with the rules for what to send next. It
//! contains everything that outlives one network connection: subscriptions, outbound QoS 1 and
//! QoS 2 state, the message queue, inbound QoS 2 packet ids and the will message.
//!
//! The session never reads a clock or touches a socket. Events come in through `handle_*`
//! methods, with `now` passed in where time matters, and the packets to send come out of
//! [`Session::poll_transmit`]. The instance keeps each session behind a mutex that is held only
//! for one call, and the connection task that owns the session drains `poll_transmit` into its
//! write buffer.

mod queue;
mod stored;
mod will;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use switchyard_codec::{Ack, Packet, ProtocolVersion, QoS, ReasonCode, encoded_len};
use switchyard_store::{InflightMessage, WriteOp};

use crate::connection::Origin;
use crate::ids::{ClientId, ConnectionId};
use crate::message::Delivery;
use crate::persist::stored_delivery;
use crate::subscriptions::Subscriber;
use crate::will::WillMessage;
use queue::{Queue, is_of_share};
use will::DelayedWill;

#[cfg(test)]
mod tests;

/// Session Expiry Interval meaning "never expires" (5.0 section 3.1.2.11.2).
pub(crate) const NEVER_EXPIRES: u32 = u32::MAX;

/// State of one client's session; see the module documentation for the calling convention.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: ClientId,
    /// The connection currently attached, or `None` while the client is offline.
    owner: Option<ConnectionId>,
    /// The path by which the last attached connection reached the instance. A DR session
    /// handover moves only sessions whose last connection came through the same global endpoint.
    origin: Origin,
    /// Session Expiry Interval in seconds, counted from the moment the client goes offline.
    expiry_interval: u32,
    disconnected_at: Option<Instant>,
    /// Topic filters of the session, mirrored in the instance's subscription tree.
    subscriptions: HashMap<String, Subscriber>,
    link: Link,
    /// Outbound QoS 1 and QoS 2 messages not yet fully acknowledged, in the order first sent.
    ///
    /// NOTE: acknowledgements are looked up by a linear scan. Clients acknowledge mostly in
    /// order, so the entry is usually at the front, but a client that announces a large Receive
    /// Maximum and acknowledges in reverse makes each lookup cost up to the window size.
    inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    queue: Queue,
    /// Packet ids of inbound QoS 2 PUBLISH packets delivered but not yet released by PUBREL.
    inbound_unreleased: HashSet<u16>,
    /// The will of the attached connection.
    will: Option<WillMessage>,
    /// The will of a connection that ended, waiting for its Will Delay Interval.
    delayed_will: Option<DelayedWill>,
    stats: SessionStats,
    /// The store writes of the changes since the instance last took them, or `None` when the
    /// session is not stored (see `session/stored.rs`).
    store_ops: Option<Vec<WriteOp>>,
}

/// Parameters of the connection a session is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) version: ProtocolVersion,
    /// How many QoS 1 and QoS 2 PUBLISH packets may await acknowledgement at once.
    pub(crate) window: u16,
    /// The client's Maximum Packet Size in bytes (MQTT 5.0), if it announced one.
    pub(crate) max_packet_size: Option<u32>,
}

/// Counters of messages the session dropped, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionStats {
    /// Dropped because the queue was full.
    pub(crate) queue_full: u64,
    /// Dropped because the PUBLISH exceeded the client's Maximum Packet Size.
    pub(crate) too_large: u64,
    /// Dropped because the Message Expiry Interval passed before sending.
    pub(crate) expired: u64,
    /// QoS 0 messages dropped because the client was offline.
    pub(crate) offline_qos0: u64,
}

impl SessionStats {
    /// Returns the number of messages dropped for any cause.
    pub(crate) fn total(&self) -> u64 {
        self.queue_full + self.too_large + self.expired + self.offline_qos0
    }
}

/// Result of [`Session::handle_deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliverOutcome {
    /// The message waits in the queue.
    Queued,
    /// The message was queued and an older one dropped to make room; `dropped_total` counts the
    /// session's drops for a full queue so far.
    QueuedAfterDrop { dropped_total: u64 },
    /// A QoS 0 message for an offline client, dropped.
    DroppedOffline,
}

/// Result of an outbound acknowledgement (PUBACK, PUBREC, PUBCOMP) from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// The acknowledgement matched a message in flight.
    Accepted,
    /// No message in flight waits for this acknowledgement with this packet id.
    Unknown,
}

/// Result of [`Session::handle_publish_qos2`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InboundQoS2 {
    /// A new message: deliver it and reply PUBREC.
    New,
    /// The packet id is still unreleased, so this is a resend: reply PUBREC without
    /// delivering again [MQTT-4.3.3-2 in 3.1.1, MQTT-4.3.3-10 in 5.0].
    Duplicate,
    /// Accepting it would exceed the Receive Maximum the server announced.
    WindowExceeded,
}

#[derive(Debug)]
struct Inflight {
    packet_id: u16,
    delivery: Delivery,
    awaiting: Awaiting,
    /// Whether the packet that `awaiting` acknowledges (the PUBLISH, or the PUBREL once PUBREC
    /// has arrived) went out on the current connection.
    sent: bool,
}

/// The acknowledgement an outbound message waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants are MQTT packet names"
)]
enum Awaiting {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    PubComp,
}

// === impl Session ===

impl Session {
    /// Creates an empty, offline session.
    ///
    /// `max_queued_messages` bounds the queue; values below 1 are treated as 1, because every
    /// message passes through the queue on its way out.
    pub(crate) fn new(
        client_id: ClientId,
        expiry_interval: u32,
        max_queued_messages: usize,
    ) -> Self {
        Session {
            client_id,
            owner: None,
            origin: Origin::Region,
            expiry_interval,
            disconnected_at: None,
            subscriptions: HashMap::new(),
            link: Link {
                version: ProtocolVersion::V3_1_1,
                window: 1,
                max_packet_size: None,
            },
            inflight: VecDeque::new(),
            next_packet_id: 1,
            queue: Queue::new(max_queued_messages.max(1)),
            inbound_unreleased: HashSet::new(),
            will: None,
            delayed_will: None,
            stats: SessionStats::default(),
            store_ops: None,
        }
    }

    pub(crate) fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Returns the attached connection, if any.
    pub(crate) fn owner(&self) -> Option<ConnectionId> {
        self.owner
    }

    pub(crate) fn is_owned_by(&self, connection: ConnectionId) -> bool {
        self.owner == Some(connection)
    }

    pub(crate) fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Returns how the last attached connection reached the instance.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Records how the connection that just attached reached the instance, and stores it
    /// when it changed, so that a restart restores it.
    pub(crate) fn handle_origin(&mut self, origin: Origin) {
        if self.origin != origin {
            self.origin = origin;
            self.record_session();
        }
    }

    /// Sets the bound of the queue, for a session that moves to an instance with other
    /// settings. A queue longer than the new bound is not trimmed, so each later message drops
    /// the oldest one, as on a full queue.
    pub(crate) fn handle_queue_capacity(&mut self, max_queued_messages: usize) {
        self.queue.set_capacity(max_queued_messages.max(1));
    }

    /// Attaches a new connection, replacing any previous owner.
    ///
    /// Every message in flight is marked unsent, so `poll_transmit` resends unacknowledged
    /// PUBLISH packets with DUP set and unanswered PUBREL packets, in their original order
    /// [MQTT-4.4.0-1 in 3.1.1 and 5.0].
    pub(crate) fn handle_attach(&mut self, connection: ConnectionId, link: Link) {
        self.owner = Some(connection);
        self.disconnected_at = None;
        self.link = link;
        for entry in &mut self.inflight {
            entry.sent = false;
        }
    }

    /// Detaches `connection` at `now` and starts the expiry clock. QoS 0 messages still queued
    /// are dropped, because they are not kept for offline clients.
    ///
    /// Returns `false`, changing nothing, when `connection` no longer owns the session.
    pub(crate) fn handle_detach(&mut self, connection: ConnectionId, now: Instant) -> bool {
        if !self.is_owned_by(connection) {
            return false;
        }
        self.owner = None;
        self.disconnected_at = Some(now);
        let dropped = self.queue.at_most_once.len() as u64;
        self.queue.at_most_once.clear();
        self.stats.offline_qos0 += dropped;
        self.record_session();
        true
    }

    /// Marks the session as discarded, because a clean start replaced it: the connection that
    /// was attached no longer owns it.
    pub(crate) fn handle_discard(&mut self) {
        self.owner = None;
    }

    /// Sets the Session Expiry Interval, in seconds, as CONNECT or a 5.0 DISCONNECT gave it.
    pub(crate) fn handle_expiry_interval(&mut self, seconds: u32) {
        self.expiry_interval = seconds;
    }

    pub(crate) fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// Returns when the offline session expires, or `None` while it is attached or when it never
    /// expires.
    pub(crate) fn poll_expiry(&self) -> Option<Instant> {
        if self.expiry_interval == NEVER_EXPIRES {
            return None;
        }
        let since = self.disconnected_at?;
        since.checked_add(Duration::from_secs(u64::from(self.expiry_interval)))
    }

    /// Reports whether the session is offline and its expiry interval has passed at `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.poll_expiry().is_some_and(|deadline| now >= deadline)
    }

    /// Records a subscription, returning whether it replaced one with the same filter.
    pub(crate) fn handle_subscribe(&mut self, filter: &str, subscriber: Subscriber) -> bool {
        let replaced = self
            .subscriptions
            .insert(filter.to_owned(), subscriber)
            .is_some();
        self.record_session();
        replaced
    }

    pub(crate) fn has_subscription(&self, filter: &str) -> bool {
        self.subscriptions.contains_key(filter)
    }

    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Forgets a subscription, returning whether it existed.
    pub(crate) fn handle_unsubscribe(&mut self, filter: &str) -> bool {
        let existed = self.subscriptions.remove(filter).is_some();
        if existed {
            self.record_session();
        }
        existed
    }

    /// Returns the topic filters of the session.
    pub(crate) fn subscription_filters(&self) -> impl Iterator<Item = &str> {
        self.subscriptions.keys().map(String::as_str)
    }

    /// Returns the subscriptions of the session with their options.
    pub(crate) fn subscriptions(&self) -> impl Iterator<Item = (&str, &Subscriber)> {
        self.subscriptions
            .iter()
            .map(|(filter, subscriber)| (filter.as_str(), subscriber))
    }

    /// Queues a message for the client.
    ///
    /// When the queue is full the oldest QoS 0 message is dropped, or the oldest message if no
    /// QoS 0 message is queued.
    pub(crate) fn handle_deliver(&mut self, delivery: Delivery) -> DeliverOutcome {
        if self.owner.is_none() && delivery.qos == QoS::AtMostOnce {
            self.stats.offline_qos0 += 1;
            return DeliverOutcome::DroppedOffline;
        }
        let dropped = self.queue.make_room();
        if let Some((sequence, qos)) = dropped
            && qos != QoS::AtMostOnce
        {
            self.record_dequeue(sequence);
        }
        let stored = (self.is_stored() && delivery.qos != QoS::AtMostOnce)
            .then(|| stored_delivery(&delivery));
        let sequence = self.queue.push(delivery);
        if let Some(message) = stored {
            self.record(WriteOp::Enqueue {
                client_id: self.client_id.as_str().to_owned(),
                seq: sequence,
                message,
            });
        }
        if dropped.is_some() {
            self.stats.queue_full += 1;
            DeliverOutcome::QueuedAfterDrop {
                dropped_total: self.stats.queue_full,
            }
        } else {
            DeliverOutcome::Queued
        }
    }

    /// Returns the next packet to send to the client at `now`, or `None` when nothing can be
    /// sent until an acknowledgement or a new message arrives.
    ///
    /// Resends come first, then queued messages in arrival order. QoS 1 and QoS 2 messages wait
    /// while the outbound window is full; QoS 0 messages pass them. A message that expired or
    /// that exceeds the client's Maximum Packet Size [MQTT-3.1.2-24 in 5.0] is dropped and
    /// counted.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Packet> {
        if let Some(packet) = self.poll_resend(now) {
            return Some(packet);
        }
        loop {
            let window_open = self.inflight.len() < usize::from(self.link.window);
            let (sequence, delivery) = self.queue.pop(window_open)?;
            let reliable = delivery.qos != QoS::AtMostOnce;
            if delivery.message.is_expired(now) {
                self.stats.expired += 1;
                if reliable {
                    self.record_dequeue(sequence);
                }
                continue;
            }
            if delivery.qos == QoS::AtMostOnce {
                let packet = Packet::Publish(delivery.to_publish(None, false, now));
                if self.fits(&packet) {
                    return Some(packet);
                }
                self.stats.too_large += 1;
                continue;
            }

            // Check the size with a placeholder id, which encodes to the same length, so a
            // dropped message does not use up a packet id.
            let probe = Packet::Publish(delivery.to_publish(Some(1), false, now));
            if !self.fits(&probe) {
                self.stats.too_large += 1;
                self.record_dequeue(sequence);
                continue;
            }
            let Some(packet_id) = self.allocate_packet_id() else {
                // Not reachable while the window is at most 65,535, but the message must not
                // be lost if it were.
                self.queue.restore(sequence, delivery);
                return None;
            };
            let packet = Packet::Publish(delivery.to_publish(Some(packet_id), false, now));
            let awaiting = if delivery.qos == QoS::ExactlyOnce {
                Awaiting::PubRec
            } else {
                Awaiting::PubAck
            };
            if self.is_stored() {
                self.record_dequeue(sequence);
                let inflight = InflightMessage {
                    message: stored_delivery(&delivery),
                    pubrel_sent: false,
                };
                self.record_inflight(packet_id, inflight);
            }
            self.inflight.push_back(Inflight {
                packet_id,
                delivery,
                awaiting,
                sent: true,
            });
            return Some(packet);
        }
    }

    /// Handles PUBACK for an outbound QoS 1 message.
    pub(crate) fn handle_puback(&mut self, packet_id: u16) -> AckOutcome {
        match self.find_inflight(packet_id, Awaiting::PubAck) {
            Some(index) => {
                self.inflight.remove(index);
                self.record_remove_inflight(packet_id);
                AckOutcome::Accepted
            }
            None => AckOutcome::Unknown,
        }
    }

    /// Handles PUBREC for an outbound QoS 2 message and schedules PUBREL.
    ///
    /// PUBREL follows only a PUBREC with a reason below 0x80 [MQTT-4.3.3-4 in 5.0]; an error
    /// reason ends the exchange and frees the packet id. A repeated PUBREC schedules PUBREL
    /// again.
    pub(crate) fn handle_pubrec(&mut self, packet_id: u16, reason: ReasonCode) -> AckOutcome {
        let position = self
            .inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id && entry.awaiting != Awaiting::PubAck);
        let Some(index) = position else {
            return AckOutcome::Unknown;
        };
        if reason.is_error() {
            self.inflight.remove(index);
            self.record_remove_inflight(packet_id);
        } else if let Some(entry) = self.inflight.get_mut(index) {
            entry.awaiting = Awaiting::PubComp;
            entry.sent = false;
            if self.store_ops.is_some() {
                let inflight = InflightMessage {
                    message: stored_delivery(&entry.delivery),
                    pubrel_sent: true,
                };
                self.record_inflight(packet_id, inflight);
            }
        }
        AckOutcome::Accepted
    }

    /// Handles PUBCOMP, which completes an outbound QoS 2 message.
    pub(crate) fn handle_pubcomp(&mut self, packet_id: u16) -> AckOutcome {
        match self.find_inflight(packet_id, Awaiting::PubComp) {
            Some(index) => {
                self.inflight.remove(index);
                self.record_remove_inflight(packet_id);
                AckOutcome::Accepted
            }
            None => AckOutcome::Unknown,
        }
    }

    /// Handles an inbound QoS 2 PUBLISH with `packet_id`, allowing at most `receive_maximum`
    /// unreleased packet ids.
    pub(crate) fn handle_publish_qos2(
        &mut self,
        packet_id: u16,
        receive_maximum: u16,
    ) -> InboundQoS2 {
        if self.inbound_unreleased.contains(&packet_id) {
            return InboundQoS2::Duplicate;
        }
        if self.inbound_unreleased.len() >= usize::from(receive_maximum) {
            return InboundQoS2::WindowExceeded;
        }
        self.inbound_unreleased.insert(packet_id);
        self.record(WriteOp::AddIncomingQos2 {
            client_id: self.client_id.as_str().to_owned(),
            packet_id,
        });
        InboundQoS2::New
    }

    /// Reports whether an inbound QoS 2 message with `packet_id` awaits PUBREL.
    pub(crate) fn is_inbound_unreleased(&self, packet_id: u16) -> bool {
        self.inbound_unreleased.contains(&packet_id)
    }

    /// Handles PUBREL, releasing an inbound packet id, and returns whether it was unreleased.
    /// The caller replies PUBCOMP either way, in 5.0 with 0x92 when it was not.
    pub(crate) fn handle_pubrel(&mut self, packet_id: u16) -> bool {
        let released = self.inbound_unreleased.remove(&packet_id);
        if released {
            self.record(WriteOp::RemoveIncomingQos2 {
                client_id: self.client_id.as_str().to_owned(),
                packet_id,
            });
        }
        released
    }

    /// Removes and returns the deliveries of the shared subscription `share` (of every shared
    /// subscription when `share` is `None`) that another member of the group can take over:
    /// the queued ones, and with `include_inflight` the QoS 1 messages awaiting PUBACK.
    ///
    /// QoS 2 messages in flight stay, because once a QoS 2 PUBLISH went out the server must
    /// finish it with this client, and must not send it to another client if the session ends
    /// first [MQTT-4.8.2-4, MQTT-4.8.2-5 in 5.0]. Resending a QoS 1 message elsewhere is what the
    /// standard recommends when the session ends.
    pub(crate) fn take_shared_deliveries(
        &mut self,
        share: Option<&str>,
        include_inflight: bool,
    ) -> Vec<Delivery> {
        let mut taken = Vec::new();
        if include_inflight {
            let (moved, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.inflight)
                .into_iter()
                .partition(|entry| {
                    entry.awaiting == Awaiting::PubAck && is_of_share(&entry.delivery, share)
                });
            self.inflight = kept;
            for entry in moved {
                self.record_remove_inflight(entry.packet_id);
                taken.push(entry.delivery);
            }
        }
        for (sequence, delivery) in self.queue.take_shared(share) {
            if delivery.qos != QoS::AtMostOnce {
                self.record_dequeue(sequence);
            }
            taken.push(delivery);
        }
        taken
    }

    /// Returns the number of messages waiting in the queue.
    pub(crate) fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Returns the number of outbound messages awaiting acknowledgement.
    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Returns the number of inbound QoS 2 packet ids awaiting PUBREL.
    pub(crate) fn unreleased_len(&self) -> usize {
        self.inbound_unreleased.len()
    }

    /// Returns the next resend the current connection owes, if any.
    fn poll_resend(&mut self, now: Instant) -> Option<Packet> {
        let window = usize::from(self.link.window);
        let sent = self.inflight.iter().filter(|entry| entry.sent).count();
        for entry in self.inflight.iter_mut().filter(|entry| !entry.sent) {
            match entry.awaiting {
                Awaiting::PubComp => {
                    entry.sent = true;
                    return Some(Packet::PubRel(Ack::new(entry.packet_id)));
                }
                Awaiting::PubAck | Awaiting::PubRec => {
                    // A smaller window on the new connection holds back the rest.
                    if sent >= window {
                        continue;
                    }
                    entry.sent = true;
                    let publish = entry.delivery.to_publish(Some(entry.packet_id), true, now);
                    return Some(Packet::Publish(publish));
                }
            }
        }
        None
    }

    fn find_inflight(&self, packet_id: u16, awaiting: Awaiting) -> Option<usize> {
        self.inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id && entry.awaiting == awaiting)
    }

    /// Picks the next packet id not in flight, or `None` if all 65,535 are in flight. A caller
    /// that checked the window always gets one, because the window is at most 65,535.
    fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.checked_add(1).unwrap_or(1);
            if !self
                .inflight
                .iter()
                .any(|entry| entry.packet_id == candidate)
            {
                return Some(candidate);
            }
        }
        None
    }

    fn fits(&self, packet: &Packet) -> bool {
        match self.link.max_packet_size {
            Some(max) => encoded_len(packet, self.link.version) <= max as usize,
            None => true,
        }
    }
}
