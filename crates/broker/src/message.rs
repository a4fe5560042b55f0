//! Application messages on their way from a publisher to subscriber sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_codec::{ByteStr, Properties, Publish, QoS};

use crate::ids::ClientId;

/// A PUBLISH accepted from a client, shared through an `Arc` by every session it is delivered to,
/// so the payload is stored once however many subscribers there are.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: ByteStr,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) publisher: ClientId,
    pub(crate) received_at: Instant,
    /// The MQTT 5.0 properties forwarded to subscribers, with the Message Expiry Interval as
    /// received. Topic Alias and Subscription Identifier are removed because they belong to one
    /// connection. Behind an `Arc` built by [`shared_properties`], because `Properties` is about
    /// 400 bytes and most messages have none.
    pub(crate) properties: Arc<Properties>,
}

/// Wraps a message's properties, sharing one allocation among all messages that have none.
pub(crate) fn shared_properties(properties: Properties) -> Arc<Properties> {
    static NONE: LazyLock<Arc<Properties>> = LazyLock::new(|| Arc::new(Properties::default()));
    if properties == **NONE {
        Arc::clone(&NONE)
    } else {
        Arc::new(properties)
    }
}

impl Message {
    /// Builds the message of a PUBLISH received from `publisher` at `now`.
    pub(crate) fn from_publish(publish: Publish, publisher: ClientId, now: Instant) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            publisher,
            received_at: now,
            properties: shared_properties(properties),
        }
    }

    /// Returns the seconds left of the Message Expiry Interval at `now`, or `None` when the
    /// message does not expire.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let elapsed = now.saturating_duration_since(self.received_at).as_secs();
        let elapsed = u32::try_from(elapsed).unwrap_or(u32::MAX);
        Some(interval.saturating_sub(elapsed))
    }

    /// Reports whether the Message Expiry Interval has passed at `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        match self.properties.message_expiry_interval {
            Some(interval) => {
                now.saturating_duration_since(self.received_at)
                    >= Duration::from_secs(u64::from(interval))
            }
            None => false,
        }
    }
}

/// One message addressed to one session, with the options of the subscriptions it matched.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// The QoS it is sent with: the publish QoS capped by the highest matching subscription QoS.
    pub(crate) qos: QoS,
    /// The RETAIN flag to send. Live deliveries clear it unless a 5.0 subscription asked for
    /// Retain As Published [MQTT-3.3.1-9 in 3.1.1, MQTT-3.3.1-12 in 5.0].
    pub(crate) retain: bool,
    /// Identifiers of the matching 5.0 subscriptions that carried one.
    pub(crate) subscription_ids: Vec<u32>,
    /// The full filter `$share/<group>/<filter>` of the shared subscription that chose this
    /// session, or `None` for a delivery through the session's own subscriptions. A message of
    /// a shared subscription can move to another member of the group when this one leaves.
    pub(crate) share: Option<Arc<str>>,
    /// Set while the store write that enqueues this delivery is pending, for QoS 1 and 2
    /// deliveries to stored sessions. The session does not send it until the flag clears.
    pub(crate) store_pending: Option<Arc<AtomicBool>>,
}

impl Delivery {
    /// Reports whether the delivery may be sent: its store write, if any, has completed.
    pub(crate) fn is_ready(&self) -> bool {
        self.store_pending
            .as_ref()
            .is_none_or(|pending| !pending.load(Ordering::Acquire))
    }

    /// Builds the PUBLISH packet that carries this delivery.
    ///
    /// The Message Expiry Interval is rewritten to the time left at `now`, as MQTT 5.0 requires
    /// of a server forwarding the message [MQTT-3.3.2-6].
    pub(crate) fn to_publish(&self, packet_id: Option<u16>, dup: bool, now: Instant) -> Publish {
        let message = &self.message;
        let mut properties = Properties::clone(&message.properties);
        properties.message_expiry_interval = message.remaining_expiry(now);
        properties.subscription_identifiers = self.subscription_ids.clone();
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: message.topic.clone(),
            packet_id,
            properties,
            payload: message.payload.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_with_expiry(expiry: Option<u32>, now: Instant) -> Message {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteStr::from("a/b"),
            packet_id: Some(7),
            properties: Properties {
                message_expiry_interval: expiry,
                topic_alias: Some(3),
                subscription_identifiers: vec![9],
                ..Properties::default()
            },
            payload: Bytes::from_static(b"hello"),
        };
        Message::from_publish(publish, ClientId::new("publisher"), now)
    }

    #[test]
    fn from_publish_drops_connection_properties() {
        let message = message_with_expiry(None, Instant::now());
        assert_eq!(message.properties.topic_alias, None);
        assert!(message.properties.subscription_identifiers.is_empty());
    }

    #[test]
    fn expiry_counts_down_from_receipt() {
        let now = Instant::now();
        let message = message_with_expiry(Some(10), now);
        assert_eq!(message.remaining_expiry(now), Some(10));
        assert_eq!(
            message.remaining_expiry(now + Duration::from_secs(4)),
            Some(6)
        );
        assert_eq!(
            message.remaining_expiry(now + Duration::from_secs(30)),
            Some(0)
        );
        assert!(!message.is_expired(now + Duration::from_secs(9)));
        assert!(message.is_expired(now + Duration::from_secs(10)));
    }

    #[test]
    fn message_without_expiry_never_expires() {
        let now = Instant::now();
        let message = message_with_expiry(None, now);
        assert_eq!(message.remaining_expiry(now), None);
        assert!(!message.is_expired(now + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn to_publish_sets_delivery_fields() {
        let now = Instant::now();
        let delivery = Delivery {
            message: Arc::new(message_with_expiry(Some(60), now)),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: vec![4, 5],
            share: None,
            store_pending: None,
        };
        let publish = delivery.to_publish(None, false, now + Duration::from_secs(20));
        assert_eq!(publish.qos, QoS::AtMostOnce);
        assert!(!publish.retain);
        assert_eq!(publish.packet_id, None);
        assert_eq!(publish.topic.as_str(), "a/b");
        assert_eq!(publish.payload, Bytes::from_static(b"hello"));
        assert_eq!(publish.properties.message_expiry_interval, Some(40));
        assert_eq!(publish.properties.subscription_identifiers, vec![4, 5]);
    }
}
