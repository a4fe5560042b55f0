use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_codec::{ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

use super::*;
use crate::message::{Delivery, Message};

const CONNECTION: ConnectionId = ConnectionId(1);

fn link(window: u16) -> Link {
    Link {
        version: ProtocolVersion::V5,
        window,
        max_packet_size: None,
    }
}

fn online_session(window: u16) -> Session {
    let mut session = Session::new(ClientId::new("client"), 0, 100);
    session.handle_attach(CONNECTION, link(window));
    session
}

fn delivery(topic: &str, qos: QoS, now: Instant) -> Delivery {
    delivery_with_properties(topic, qos, Properties::default(), now)
}

fn delivery_with_properties(
    topic: &str,
    qos: QoS,
    properties: Properties,
    received_at: Instant,
) -> Delivery {
    delivery_with_payload(
        topic,
        qos,
        properties,
        Bytes::from_static(b"payload"),
        received_at,
    )
}

fn delivery_with_payload(
    topic: &str,
    qos: QoS,
    properties: Properties,
    payload: Bytes,
    received_at: Instant,
) -> Delivery {
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: None,
        properties,
        payload,
    };
    let message = Message::from_publish(publish, ClientId::new("publisher"), received_at);
    Delivery {
        message: Arc::new(message),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        share: None,
        store_pending: None,
    }
}

/// Unwraps a PUBLISH returned by `poll_transmit`, failing the test on anything else.
fn expect_publish(packet: Option<Packet>) -> Publish {
    match packet {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn expect_pubrel(packet: Option<Packet>) -> u16 {
    match packet {
        Some(Packet::PubRel(ack)) => ack.packet_id,
        other => panic!("expected PUBREL, got {other:?}"),
    }
}

fn drain_topics(session: &mut Session, now: Instant) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(packet) = session.poll_transmit(now) {
        topics.push(expect_publish(Some(packet)).topic.as_str().to_owned());
    }
    topics
}

#[test]
fn qos0_is_sent_without_packet_id() {
    let now = Instant::now();
    let mut session = online_session(4);
    assert_eq!(
        session.handle_deliver(delivery("t", QoS::AtMostOnce, now)),
        DeliverOutcome::Queued
    );

    let publish = expect_publish(session.poll_transmit(now));
    assert_eq!(publish.qos, QoS::AtMostOnce);
    assert_eq!(publish.packet_id, None);
    assert!(!publish.dup);
    assert_eq!(session.inflight_len(), 0);
    assert!(session.poll_transmit(now).is_none());
}

#[test]
fn qos1_completes_on_puback() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("t", QoS::AtLeastOnce, now));

    let publish = expect_publish(session.poll_transmit(now));
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(publish.packet_id, Some(1));
    assert_eq!(session.inflight_len(), 1);

    assert_eq!(session.handle_puback(1), AckOutcome::Accepted);
    assert_eq!(session.inflight_len(), 0);
    assert_eq!(session.handle_puback(1), AckOutcome::Unknown);
}

#[test]
fn qos2_runs_pubrec_pubrel_pubcomp() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("t", QoS::ExactlyOnce, now));

    let publish = expect_publish(session.poll_transmit(now));
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    let packet_id = publish.packet_id.unwrap_or_default();
    assert!(session.poll_transmit(now).is_none());

    assert_eq!(
        session.handle_pubrec(packet_id, ReasonCode::SUCCESS),
        AckOutcome::Accepted
    );
    assert_eq!(expect_pubrel(session.poll_transmit(now)), packet_id);
    assert!(session.poll_transmit(now).is_none());
    assert_eq!(session.inflight_len(), 1);

    assert_eq!(session.handle_pubcomp(packet_id), AckOutcome::Accepted);
    assert_eq!(session.inflight_len(), 0);
}

#[test]
fn acknowledgement_of_wrong_kind_is_unknown() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("one", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("two", QoS::ExactlyOnce, now));
    drain_topics(&mut session, now);

    assert_eq!(
        session.handle_pubrec(1, ReasonCode::SUCCESS),
        AckOutcome::Unknown
    );
    assert_eq!(session.handle_pubcomp(1), AckOutcome::Unknown);
    assert_eq!(session.handle_puback(2), AckOutcome::Unknown);
    assert_eq!(session.handle_pubcomp(2), AckOutcome::Unknown);
    assert_eq!(session.handle_puback(9), AckOutcome::Unknown);
    assert_eq!(session.inflight_len(), 2);
}

#[test]
fn pubrec_error_ends_qos2_exchange() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("t", QoS::ExactlyOnce, now));
    expect_publish(session.poll_transmit(now));

    assert_eq!(
        session.handle_pubrec(1, ReasonCode::NOT_AUTHORIZED),
        AckOutcome::Accepted
    );
    assert_eq!(session.inflight_len(), 0);
    assert!(session.poll_transmit(now).is_none());
}

#[test]
fn repeated_pubrec_resends_pubrel() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("t", QoS::ExactlyOnce, now));
    expect_publish(session.poll_transmit(now));
    session.handle_pubrec(1, ReasonCode::SUCCESS);
    assert_eq!(expect_pubrel(session.poll_transmit(now)), 1);

    assert_eq!(
        session.handle_pubrec(1, ReasonCode::SUCCESS),
        AckOutcome::Accepted
    );
    assert_eq!(expect_pubrel(session.poll_transmit(now)), 1);
    assert!(session.poll_transmit(now).is_none());
}

#[test]
fn window_bounds_messages_in_flight() {
    let now = Instant::now();
    let mut session = online_session(2);
    for topic in ["a", "b", "c"] {
        session.handle_deliver(delivery(topic, QoS::AtLeastOnce, now));
    }

    assert_eq!(drain_topics(&mut session, now), ["a", "b"]);
    assert_eq!(session.queued_len(), 1);
    session.handle_puback(1);
    assert_eq!(drain_topics(&mut session, now), ["c"]);
    assert_eq!(session.queued_len(), 0);
}

#[test]
fn qos0_passes_a_full_window() {
    let now = Instant::now();
    let mut session = online_session(1);
    session.handle_deliver(delivery("q1-a", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("q1-b", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("q0", QoS::AtMostOnce, now));

    assert_eq!(drain_topics(&mut session, now), ["q1-a", "q0"]);
    session.handle_puback(1);
    assert_eq!(drain_topics(&mut session, now), ["q1-b"]);
}

#[test]
fn open_window_keeps_arrival_order() {
    let now = Instant::now();
    let mut session = online_session(10);
    session.handle_deliver(delivery("1", QoS::AtMostOnce, now));
    session.handle_deliver(delivery("2", QoS::ExactlyOnce, now));
    session.handle_deliver(delivery("3", QoS::AtMostOnce, now));
    session.handle_deliver(delivery("4", QoS::AtLeastOnce, now));
    assert_eq!(drain_topics(&mut session, now), ["1", "2", "3", "4"]);
}

#[test]
fn attach_resends_in_original_order() {
    let now = Instant::now();
    let mut session = online_session(10);
    for (topic, qos) in [
        ("a", QoS::AtLeastOnce),
        ("b", QoS::ExactlyOnce),
        ("c", QoS::ExactlyOnce),
    ] {
        session.handle_deliver(delivery(topic, qos, now));
    }
    drain_topics(&mut session, now);
    session.handle_pubrec(2, ReasonCode::SUCCESS);
    assert_eq!(expect_pubrel(session.poll_transmit(now)), 2);

    // The connection drops and the client comes back.
    assert!(session.handle_detach(CONNECTION, now));
    session.handle_attach(ConnectionId(2), link(10));

    let first = expect_publish(session.poll_transmit(now));
    assert_eq!(first.topic.as_str(), "a");
    assert_eq!(first.packet_id, Some(1));
    assert!(first.dup);
    assert_eq!(expect_pubrel(session.poll_transmit(now)), 2);
    let third = expect_publish(session.poll_transmit(now));
    assert_eq!(third.topic.as_str(), "c");
    assert_eq!(third.packet_id, Some(3));
    assert!(third.dup);
    assert!(session.poll_transmit(now).is_none());
}

#[test]
fn resend_respects_smaller_window() {
    let now = Instant::now();
    let mut session = online_session(3);
    for topic in ["a", "b", "c"] {
        session.handle_deliver(delivery(topic, QoS::AtLeastOnce, now));
    }
    session.handle_deliver(delivery("d", QoS::AtLeastOnce, now));
    drain_topics(&mut session, now);

    session.handle_detach(CONNECTION, now);
    session.handle_attach(ConnectionId(2), link(1));
    assert_eq!(drain_topics(&mut session, now), ["a"]);
    session.handle_puback(1);
    assert_eq!(drain_topics(&mut session, now), ["b"]);
    session.handle_puback(2);
    session.handle_puback(3);
    assert_eq!(drain_topics(&mut session, now), ["d"]);
}

#[test]
fn ack_before_resend_cancels_it() {
    let now = Instant::now();
    let mut session = online_session(4);
    session.handle_deliver(delivery("a", QoS::AtLeastOnce, now));
    drain_topics(&mut session, now);
    session.handle_detach(CONNECTION, now);
    session.handle_attach(ConnectionId(2), link(4));

    assert_eq!(session.handle_puback(1), AckOutcome::Accepted);
    assert!(session.poll_transmit(now).is_none());
}

#[test]
fn packet_ids_skip_ids_in_flight_and_wrap() {
    let now = Instant::now();
    let mut session = online_session(u16::MAX);
    session.next_packet_id = u16::MAX - 1;
    for topic in ["a", "b", "c"] {
        session.handle_deliver(delivery(topic, QoS::AtLeastOnce, now));
    }
    let ids: Vec<Option<u16>> = (0..3)
        .map(|_| expect_publish(session.poll_transmit(now)).packet_id)
        .collect();
    assert_eq!(ids, [Some(u16::MAX - 1), Some(u16::MAX), Some(1)]);

    // Id 1 is still in flight, so the next message skips it.
    session.handle_puback(u16::MAX);
    session.next_packet_id = 1;
    session.handle_deliver(delivery("d", QoS::AtLeastOnce, now));
    assert_eq!(
        expect_publish(session.poll_transmit(now)).packet_id,
        Some(2)
    );
}

#[test]
fn full_queue_drops_oldest_qos0_first() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 0, 3);
    session.handle_attach(CONNECTION, link(10));
    session.handle_deliver(delivery("q1-a", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("q0-a", QoS::AtMostOnce, now));
    session.handle_deliver(delivery("q0-b", QoS::AtMostOnce, now));

    let outcome = session.handle_deliver(delivery("q1-b", QoS::AtLeastOnce, now));
    assert_eq!(
        outcome,
        DeliverOutcome::QueuedAfterDrop { dropped_total: 1 }
    );
    assert_eq!(drain_topics(&mut session, now), ["q1-a", "q0-b", "q1-b"]);
    assert_eq!(session.stats().queue_full, 1);
}

#[test]
fn full_queue_without_qos0_drops_oldest() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 0, 2);
    session.handle_attach(CONNECTION, link(10));
    session.handle_deliver(delivery("a", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("b", QoS::ExactlyOnce, now));
    session.handle_deliver(delivery("c", QoS::AtLeastOnce, now));
    let outcome = session.handle_deliver(delivery("d", QoS::AtMostOnce, now));

    assert_eq!(
        outcome,
        DeliverOutcome::QueuedAfterDrop { dropped_total: 2 }
    );
    assert_eq!(drain_topics(&mut session, now), ["c", "d"]);
}

#[test]
fn zero_queue_capacity_acts_as_one() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 0, 0);
    session.handle_attach(CONNECTION, link(10));
    session.handle_deliver(delivery("a", QoS::AtLeastOnce, now));
    session.handle_deliver(delivery("b", QoS::AtLeastOnce, now));
    assert_eq!(drain_topics(&mut session, now), ["b"]);
}

#[test]
fn offline_session_queues_only_reliable_messages() {
    let now = Instant::now();
    let mut session = online_session(10);
    session.handle_deliver(delivery("online-q0", QoS::AtMostOnce, now));
    session.handle_detach(CONNECTION, now);

    assert_eq!(
        session.handle_deliver(delivery("q0", QoS::AtMostOnce, now)),
        DeliverOutcome::DroppedOffline
    );
    assert_eq!(
        session.handle_deliver(delivery("q1", QoS::AtLeastOnce, now)),
        DeliverOutcome::Queued
    );
    assert_eq!(
        session.handle_deliver(delivery("q2", QoS::ExactlyOnce, now)),
        DeliverOutcome::Queued
    );
    assert_eq!(session.stats().offline_qos0, 2);

    session.handle_attach(ConnectionId(2), link(10));
    assert_eq!(drain_topics(&mut session, now), ["q1", "q2"]);
}

#[test]
fn expired_message_is_dropped() {
    let now = Instant::now();
    let mut session = online_session(10);
    let expiring = Properties {
        message_expiry_interval: Some(5),
        ..Properties::default()
    };
    let later = now + Duration::from_secs(2);
    session.handle_deliver(delivery_with_properties(
        "old",
        QoS::AtLeastOnce,
        expiring.clone(),
        now,
    ));
    session.handle_deliver(delivery_with_properties(
        "fresh",
        QoS::AtLeastOnce,
        expiring,
        later,
    ));

    let publish = expect_publish(session.poll_transmit(now + Duration::from_secs(6)));
    assert_eq!(publish.topic.as_str(), "fresh");
    assert!(
        session
            .poll_transmit(now + Duration::from_secs(6))
            .is_none()
    );
    assert_eq!(session.stats().expired, 1);
}

#[test]
fn forwarded_expiry_counts_down() {
    let now = Instant::now();
    let mut session = online_session(10);
    let expiring = Properties {
        message_expiry_interval: Some(60),
        ..Properties::default()
    };
    session.handle_deliver(delivery_with_properties(
        "t",
        QoS::AtLeastOnce,
        expiring,
        now,
    ));
    let publish = expect_publish(session.poll_transmit(now + Duration::from_secs(15)));
    assert_eq!(publish.properties.message_expiry_interval, Some(45));
}

#[test]
fn oversized_publish_is_dropped_and_counted() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 0, 10);
    let small_limit = Link {
        version: ProtocolVersion::V5,
        window: 10,
        max_packet_size: Some(64),
    };
    session.handle_attach(CONNECTION, small_limit);

    let payload = Bytes::from(vec![0u8; 200]);
    let large = delivery_with_payload("big", QoS::AtLeastOnce, Properties::default(), payload, now);
    session.handle_deliver(large);
    session.handle_deliver(delivery("small", QoS::AtLeastOnce, now));

    let publish = expect_publish(session.poll_transmit(now));
    assert_eq!(publish.topic.as_str(), "small");
    assert_eq!(publish.packet_id, Some(1));
    assert_eq!(session.stats().too_large, 1);
}

#[test]
fn inbound_qos2_duplicate_is_not_new() {
    let mut session = online_session(10);
    assert_eq!(session.handle_publish_qos2(7, 10), InboundQoS2::New);
    assert!(session.is_inbound_unreleased(7));
    assert_eq!(session.handle_publish_qos2(7, 10), InboundQoS2::Duplicate);

    assert!(session.handle_pubrel(7));
    assert!(!session.is_inbound_unreleased(7));
    assert!(!session.handle_pubrel(7));
    assert_eq!(session.handle_publish_qos2(7, 10), InboundQoS2::New);
}

#[test]
fn inbound_qos2_window_is_enforced() {
    let mut session = online_session(10);
    assert_eq!(session.handle_publish_qos2(1, 2), InboundQoS2::New);
    assert_eq!(session.handle_publish_qos2(2, 2), InboundQoS2::New);
    assert_eq!(
        session.handle_publish_qos2(3, 2),
        InboundQoS2::WindowExceeded
    );
    assert_eq!(session.handle_publish_qos2(1, 2), InboundQoS2::Duplicate);
    session.handle_pubrel(1);
    assert_eq!(session.handle_publish_qos2(3, 2), InboundQoS2::New);
}

#[test]
fn inbound_qos2_state_survives_reconnect() {
    let now = Instant::now();
    let mut session = online_session(10);
    session.handle_publish_qos2(5, 10);
    session.handle_detach(CONNECTION, now);
    session.handle_attach(ConnectionId(2), link(10));
    assert_eq!(session.handle_publish_qos2(5, 10), InboundQoS2::Duplicate);
    assert!(session.handle_pubrel(5));
}

#[test]
fn expiry_starts_when_client_goes_offline() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 30, 10);
    session.handle_attach(CONNECTION, link(10));
    assert_eq!(session.poll_expiry(), None);
    assert!(!session.is_expired(now + Duration::from_secs(3600)));

    session.handle_detach(CONNECTION, now);
    assert_eq!(session.poll_expiry(), Some(now + Duration::from_secs(30)));
    assert!(!session.is_expired(now + Duration::from_secs(29)));
    assert!(session.is_expired(now + Duration::from_secs(30)));

    session.handle_attach(ConnectionId(2), link(10));
    assert_eq!(session.poll_expiry(), None);
}

#[test]
fn never_expiring_session_has_no_deadline() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), NEVER_EXPIRES, 10);
    session.handle_attach(CONNECTION, link(10));
    session.handle_detach(CONNECTION, now);
    assert_eq!(session.poll_expiry(), None);
    assert!(!session.is_expired(now + Duration::from_secs(u64::from(u32::MAX))));
}

#[test]
fn disconnect_can_change_expiry() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 30, 10);
    session.handle_attach(CONNECTION, link(10));
    session.handle_expiry_interval(0);
    session.handle_detach(CONNECTION, now);
    assert_eq!(session.expiry_interval(), 0);
    assert!(session.is_expired(now));
}

#[test]
fn detach_by_previous_owner_is_ignored() {
    let now = Instant::now();
    let mut session = online_session(10);
    session.handle_attach(ConnectionId(2), link(10));
    assert!(!session.handle_detach(CONNECTION, now));
    assert_eq!(session.owner(), Some(ConnectionId(2)));
    assert!(session.is_owned_by(ConnectionId(2)));
    assert!(!session.is_owned_by(CONNECTION));
}

#[test]
fn subscriptions_are_recorded_and_forgotten() {
    let mut session = online_session(10);
    let subscriber = Subscriber {
        options: switchyard_codec::SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        subscription_id: None,
    };
    assert!(!session.handle_subscribe("a/+", subscriber));
    assert!(session.handle_subscribe("a/+", subscriber));
    assert!(!session.handle_subscribe("b/#", subscriber));
    let mut filters: Vec<&str> = session.subscription_filters().collect();
    filters.sort();
    assert_eq!(filters, ["a/+", "b/#"]);
    assert!(session.handle_unsubscribe("a/+"));
    assert!(!session.handle_unsubscribe("a/+"));
}

fn shared_delivery(topic: &str, qos: QoS, share: &str, now: Instant) -> Delivery {
    let mut shared = delivery(topic, qos, now);
    shared.share = Some(Arc::from(share));
    shared
}

#[test]
fn shared_queued_messages_are_taken_in_order() {
    let now = Instant::now();
    let mut session = Session::new(ClientId::new("client"), 60, 100);
    session.handle_deliver(shared_delivery("a", QoS::AtLeastOnce, "$share/g/t", now));
    session.handle_deliver(delivery("own", QoS::AtLeastOnce, now));
    session.handle_deliver(shared_delivery(
        "b",
        QoS::ExactlyOnce,
        "$share/other/t",
        now,
    ));
    session.handle_deliver(shared_delivery("c", QoS::AtLeastOnce, "$share/g/t", now));

    let taken = session.take_shared_deliveries(Some("$share/g/t"), false);
    let topics: Vec<&str> = taken.iter().map(|d| d.message.topic.as_str()).collect();
    assert_eq!(topics, ["a", "c"]);
    assert_eq!(session.queued_len(), 2);

    let rest = session.take_shared_deliveries(None, false);
    let topics: Vec<&str> = rest.iter().map(|d| d.message.topic.as_str()).collect();
    assert_eq!(topics, ["b"]);
    assert_eq!(session.queued_len(), 1);
}

#[test]
fn shared_inflight_qos1_is_taken_and_qos2_stays() {
    let now = Instant::now();
    let mut session = online_session(10);
    session.handle_deliver(shared_delivery("q1", QoS::AtLeastOnce, "$share/g/t", now));
    session.handle_deliver(shared_delivery("q2", QoS::ExactlyOnce, "$share/g/t", now));
    session.handle_deliver(delivery("own", QoS::AtLeastOnce, now));
    drain_topics(&mut session, now);
    assert_eq!(session.inflight_len(), 3);

    let without_inflight = session.take_shared_deliveries(None, false);
    assert!(without_inflight.is_empty());

    let taken = session.take_shared_deliveries(None, true);
    let topics: Vec<&str> = taken.iter().map(|d| d.message.topic.as_str()).collect();
    assert_eq!(topics, ["q1"]);
    assert_eq!(session.inflight_len(), 2);
    assert_eq!(session.handle_puback(1), AckOutcome::Unknown);
    assert_eq!(
        session.handle_pubrec(2, ReasonCode::SUCCESS),
        AckOutcome::Accepted
    );
}
