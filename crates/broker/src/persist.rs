//! The link between the broker's in-memory state and a [`MessageStore`]: the store handle of an
//! instance, and the conversions between messages, subscriptions and wills and their records.
//!
//! Only persistent sessions are stored: those with a Session Expiry Interval above 0 (Clean
//! Session 0 in 3.1.1). Times become [`UnixMillis`] on the way in and `Instant`s on the way
//! out, measured against the clock at the moment of the conversion.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard_codec::{
    ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS, SubscriptionOptions, decode_packet,
    encode_packet,
};
use switchyard_store::message::unix_millis_now;
use switchyard_store::{
    MessageStore, SessionOrigin, StoreError, StoreFuture, StoredMessage, StoredSubscription,
    StoredWill, UnixMillis, WriteBatch, WriteOp,
};
use tracing::warn;

use crate::connection::Origin;
use crate::ids::ClientId;
use crate::instance::SessionSlot;
use crate::message::{Delivery, Message, shared_properties};
use crate::subscriptions::Subscriber;
use crate::will::WillMessage;

/// The message store of one instance.
#[derive(Clone)]
pub(crate) struct InstanceStore {
    store: Arc<dyn MessageStore>,
    instance_id: Arc<str>,
}

impl InstanceStore {
    pub(crate) fn new(store: Arc<dyn MessageStore>, instance_id: &str) -> InstanceStore {
        InstanceStore {
            store,
            instance_id: Arc::from(instance_id),
        }
    }

    /// Submits `ops` as one batch, or returns `None` when there are none.
    ///
    /// The store queues the batch during this call, so callers that submit while holding a
    /// session's lock commit that session's changes in the order they were made.
    pub(crate) fn submit(&self, ops: Vec<WriteOp>) -> Option<StoreFuture<()>> {
        if ops.is_empty() {
            return None;
        }
        let batch = WriteBatch {
            instance_id: self.instance_id.to_string(),
            ops,
        };
        Some(self.store.submit(batch))
    }

    /// Submits the move of a session from this instance to `adopter` as one unit: `removal`
    /// on this instance, then `whole` on `adopter`, committed together or not at all.
    ///
    /// Returns `None`, submitting nothing, when the two instances write to different stores,
    /// because no store can commit a unit across two stores.
    pub(crate) fn submit_move(
        &self,
        adopter: &InstanceStore,
        removal: Vec<WriteOp>,
        whole: Vec<WriteOp>,
    ) -> Option<StoreFuture<()>> {
        if !Arc::ptr_eq(&self.store, &adopter.store) {
            return None;
        }
        let batches = vec![
            WriteBatch {
                instance_id: self.instance_id.to_string(),
                ops: removal,
            },
            WriteBatch {
                instance_id: adopter.instance_id.to_string(),
                ops: whole,
            },
        ];
        Some(self.store.submit_atomic(batches))
    }
}

/// Awaits a store write, logging a failure with the instance and what the write was for.
pub(crate) async fn wait_logged(
    future: Option<StoreFuture<()>>,
    instance_id: &str,
    purpose: &str,
) -> Result<(), StoreError> {
    let Some(future) = future else {
        return Ok(());
    };
    let result = future.await;
    if let Err(error) = &result {
        warn!(instance = instance_id, purpose, %error, "Message store write failed");
    }
    result
}

/// The store write of one published message, with the deliveries that wait for it.
///
/// A QoS 1 or 2 delivery to a stored session is not sent until the batch that enqueues it has
/// completed, so the session's later writes (dequeue, inflight) always commit after it. The
/// deliveries are released when the write completes or when this value is dropped.
///
/// Awaiting the value waits for the write and then releases the deliveries, so a connection
/// can keep several of them pending and poll each one.
pub(crate) struct MessageWrite {
    future: StoreFuture<()>,
    /// `None` once the write has completed and the deliveries are released.
    release: Option<Release>,
}

impl MessageWrite {
    pub(crate) fn new(
        future: StoreFuture<()>,
        gate: Arc<AtomicBool>,
        slots: Vec<Arc<SessionSlot>>,
    ) -> MessageWrite {
        MessageWrite {
            future,
            release: Some(Release { gate, slots }),
        }
    }
}

impl Future for MessageWrite {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.future.as_mut().poll(cx));
        self.release = None;
        Poll::Ready(result)
    }
}

struct Release {
    gate: Arc<AtomicBool>,
    slots: Vec<Arc<SessionSlot>>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.gate.store(false, Ordering::Release);
        for slot in &self.slots {
            slot.wake.notify_one();
        }
    }
}

/// Returns the Unix time of `instant`, counted from the current time.
pub(crate) fn unix_millis_of(instant: Instant) -> UnixMillis {
    let now = tokio::time::Instant::now().into_std();
    let now_millis = unix_millis_now();
    if instant >= now {
        let ahead = u64::try_from((instant - now).as_millis()).unwrap_or(u64::MAX);
        now_millis.saturating_add(ahead)
    } else {
        let behind = u64::try_from((now - instant).as_millis()).unwrap_or(u64::MAX);
        now_millis.saturating_sub(behind)
    }
}

/// Returns the `Instant` of the Unix time `millis`, or `now` for a time so far in the past
/// that the monotonic clock cannot represent it.
pub(crate) fn instant_of(millis: UnixMillis, now: Instant, now_millis: UnixMillis) -> Instant {
    if millis >= now_millis {
        now.checked_add(Duration::from_millis(millis - now_millis))
            .unwrap_or(now)
    } else {
        now.checked_sub(Duration::from_millis(now_millis - millis))
            .unwrap_or(now)
    }
}

/// Encodes MQTT 5 properties as the property section of a PUBLISH, which is how the store
/// keeps them. Empty properties encode to no bytes.
fn encode_properties(properties: &Properties) -> Vec<u8> {
    if *properties == Properties::default() {
        return Vec::new();
    }
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from("p"),
        packet_id: None,
        properties: properties.clone(),
        payload: Bytes::new(),
    };
    let mut buf = BytesMut::new();
    encode_packet(&Packet::Publish(publish), ProtocolVersion::V5, &mut buf);
    buf.to_vec()
}

/// Decodes what [`encode_properties`] wrote. Bytes that do not decode give empty properties,
/// with a warning, so one damaged field does not lose the message.
fn decode_properties(bytes: &[u8]) -> Properties {
    if bytes.is_empty() {
        return Properties::default();
    }
    let mut buf = BytesMut::from(bytes);
    match decode_packet(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Some(Packet::Publish(publish))) => publish.properties,
        other => {
            warn!(result = ?other.map(|packet| packet.map(|packet| packet.name())),
                "Stored message properties did not decode; restoring the message without them");
            Properties::default()
        }
    }
}

fn qos_of(value: u8) -> QoS {
    QoS::from_u8(value).unwrap_or(QoS::AtLeastOnce)
}

/// Returns the record of a delivery queued or in flight to a session.
pub(crate) fn stored_delivery(delivery: &Delivery) -> StoredMessage {
    let message = &delivery.message;
    let mut properties = Properties::clone(&message.properties);
    properties.message_expiry_interval = None;
    properties.subscription_identifiers = delivery.subscription_ids.clone();
    StoredMessage {
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.to_vec(),
        qos: delivery.qos as u8,
        retain: delivery.retain,
        properties: encode_properties(&properties),
        expires_at: expiry_deadline(message),
    }
}

/// Returns the Unix time at which `message` expires, if it has a Message Expiry Interval.
fn expiry_deadline(message: &Message) -> Option<UnixMillis> {
    let interval = message.properties.message_expiry_interval?;
    Some(unix_millis_of(message.received_at).saturating_add(u64::from(interval) * 1000))
}

/// Rebuilds a message from its record, received at `now`, with the Message Expiry Interval
/// set to the time left. The message takes over the record's topic and payload buffers.
fn restored_message(stored: StoredMessage, now: Instant, now_millis: UnixMillis) -> Message {
    let mut properties = decode_properties(&stored.properties);
    properties.subscription_identifiers = Vec::new();
    properties.message_expiry_interval = stored.expires_at.map(|deadline| {
        let millis = deadline.saturating_sub(now_millis).div_ceil(1000);
        u32::try_from(millis).unwrap_or(u32::MAX)
    });
    Message {
        topic: ByteStr::from(stored.topic),
        payload: Bytes::from(stored.payload),
        qos: qos_of(stored.qos),
        retain: stored.retain,
        publisher: ClientId::new(""),
        received_at: now,
        properties: shared_properties(properties),
    }
}

/// Rebuilds a delivery from the record [`stored_delivery`] wrote.
///
/// NOTE: the shared subscription a delivery came through is not stored, so a restored
/// delivery stays with its session when the session leaves the group.
pub(crate) fn restored_delivery(
    stored: StoredMessage,
    now: Instant,
    now_millis: UnixMillis,
) -> Delivery {
    let subscription_ids = decode_properties(&stored.properties).subscription_identifiers;
    let message = restored_message(stored, now, now_millis);
    Delivery {
        qos: message.qos,
        retain: message.retain,
        subscription_ids,
        share: None,
        message: Arc::new(message),
        store_pending: None,
    }
}

/// Returns the record of a retained message.
pub(crate) fn stored_retained(message: &Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.to_vec(),
        qos: message.qos as u8,
        retain: true,
        properties: encode_properties(&Properties {
            message_expiry_interval: None,
            ..Properties::clone(&message.properties)
        }),
        expires_at: expiry_deadline(message),
    }
}

/// Rebuilds a retained message from its record.
pub(crate) fn restored_retained(
    stored: StoredMessage,
    now: Instant,
    now_millis: UnixMillis,
) -> Message {
    restored_message(stored, now, now_millis)
}

pub(crate) fn stored_subscription(filter: &str, subscriber: &Subscriber) -> StoredSubscription {
    StoredSubscription {
        filter: filter.to_owned(),
        qos: subscriber.options.qos as u8,
        no_local: subscriber.options.no_local,
        retain_as_published: subscriber.options.retain_as_published,
        retain_handling: subscriber.options.retain_handling,
        subscription_identifier: subscriber.subscription_id,
    }
}

pub(crate) fn restored_subscriber(stored: &StoredSubscription) -> Subscriber {
    Subscriber {
        options: SubscriptionOptions {
            qos: qos_of(stored.qos),
            no_local: stored.no_local,
            retain_as_published: stored.retain_as_published,
            retain_handling: stored.retain_handling,
        },
        subscription_id: stored.subscription_identifier,
    }
}

/// Returns the record of a will, due at `publish_at` once its connection has closed.
pub(crate) fn stored_will(will: &WillMessage, publish_at: Option<UnixMillis>) -> StoredWill {
    StoredWill {
        message: StoredMessage {
            topic: will.topic.as_str().to_owned(),
            payload: will.payload.to_vec(),
            qos: will.qos as u8,
            retain: will.retain,
            properties: encode_properties(&will.properties),
            expires_at: None,
        },
        delay_interval: will.delay,
        publish_at,
    }
}

pub(crate) fn restored_will(stored: &StoredWill) -> WillMessage {
    let message = &stored.message;
    WillMessage {
        topic: ByteStr::from(message.topic.clone()),
        payload: Bytes::from(message.payload.clone()),
        qos: qos_of(message.qos),
        retain: message.retain,
        delay: stored.delay_interval,
        properties: decode_properties(&message.properties),
    }
}

/// Returns the record of the way a session's last connection reached the instance.
pub(crate) fn stored_origin(origin: &Origin) -> SessionOrigin {
    match origin {
        Origin::Region => SessionOrigin::Region,
        Origin::Global { group } => SessionOrigin::Global {
            group: group.clone(),
        },
    }
}

pub(crate) fn restored_origin(stored: &SessionOrigin) -> Origin {
    match stored {
        SessionOrigin::Region => Origin::Region,
        SessionOrigin::Global { group } => Origin::Global {
            group: group.clone(),
        },
    }
}

/// Returns the protocol version of a stored protocol level, 3.1.1 for an unknown one.
pub(crate) fn version_of(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        5 => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    }
}
