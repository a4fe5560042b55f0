//! SUBSCRIBE and UNSUBSCRIBE over the wire: wildcards, `$` topics, overlapping filters, invalid
//! and unauthorized filters, and point-to-point topics.

mod common;

use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet};
use switchyard_codec::{Packet, Properties, ProtocolVersion, QoS, ReasonCode, Unsubscribe};

const QUIET: Duration = Duration::from_millis(200);

async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(version, id, true))
        .await
        .0
}

#[tokio::test]
async fn wildcards_route_to_matching_subscribers() {
    let broker = TestBroker::start().await;
    let mut plus = client(&broker, ProtocolVersion::V3_1_1, "plus").await;
    plus.subscribe(1, &[("sport/+/score", QoS::AtMostOnce)])
        .await;
    let mut hash = client(&broker, ProtocolVersion::V3_1_1, "hash").await;
    hash.subscribe(1, &[("sport/#", QoS::AtMostOnce)]).await;
    let mut publisher = client(&broker, ProtocolVersion::V3_1_1, "pub").await;

    publisher
        .publish("sport/tennis/score", QoS::AtMostOnce, 0, b"1")
        .await;
    publisher.publish("sport", QoS::AtMostOnce, 0, b"2").await;
    publisher
        .publish("news/tennis/score", QoS::AtMostOnce, 0, b"3")
        .await;
    publisher.ping().await;

    assert_eq!(&plus.recv_publish().await.payload[..], b"1");
    assert!(plus.try_recv(QUIET).await.is_none());
    assert_eq!(&hash.recv_publish().await.payload[..], b"1");
    assert_eq!(&hash.recv_publish().await.payload[..], b"2");
    assert!(hash.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn dollar_topics_skip_leading_wildcards() {
    let broker = TestBroker::start().await;
    let mut everything = client(&broker, ProtocolVersion::V3_1_1, "everything").await;
    everything
        .subscribe(1, &[("#", QoS::AtMostOnce), ("+/status", QoS::AtMostOnce)])
        .await;
    let mut system = client(&broker, ProtocolVersion::V3_1_1, "system").await;
    system.subscribe(1, &[("$SYS/#", QoS::AtMostOnce)]).await;
    let mut publisher = client(&broker, ProtocolVersion::V3_1_1, "pub").await;

    publisher
        .publish("$SYS/status", QoS::AtMostOnce, 0, b"sys")
        .await;
    publisher
        .publish("plain/status", QoS::AtMostOnce, 0, b"plain")
        .await;

    assert_eq!(&system.recv_publish().await.payload[..], b"sys");
    assert_eq!(&everything.recv_publish().await.payload[..], b"plain");
    assert!(everything.try_recv(QUIET).await.is_none());
    assert!(system.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn overlapping_filters_deliver_once_at_highest_qos() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, ProtocolVersion::V5, "overlap").await;
    let granted = sub
        .subscribe(
            1,
            &[
                ("a/#", QoS::AtMostOnce),
                ("a/+", QoS::AtLeastOnce),
                ("a/b", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(
        granted,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_0
        ]
    );
    let mut publisher = client(&broker, ProtocolVersion::V5, "pub").await;
    publisher.publish("a/b", QoS::ExactlyOnce, 1, b"x").await;

    let publish = sub.recv_publish().await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert!(
        sub.try_recv(QUIET).await.is_none(),
        "delivered more than once"
    );
}

#[tokio::test]
async fn subscription_identifiers_are_forwarded() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, ProtocolVersion::V5, "ids").await;
    let mut subscribe = common::subscribe_packet(1, &[("a/+", QoS::AtMostOnce)]);
    if let Packet::Subscribe(subscribe) = &mut subscribe {
        subscribe.properties.subscription_identifiers = vec![42];
    }
    sub.send(&subscribe).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = client(&broker, ProtocolVersion::V5, "pub").await;
    publisher.publish("a/b", QoS::AtMostOnce, 0, b"x").await;
    assert_eq!(
        sub.recv_publish().await.properties.subscription_identifiers,
        [42]
    );
}

#[tokio::test]
async fn invalid_filters_get_failure_codes() {
    let broker = TestBroker::start().await;
    let filters = [
        ("a/#/b", QoS::AtMostOnce),
        ("a+", QoS::AtMostOnce),
        ("ok/+", QoS::AtLeastOnce),
    ];

    let mut v311 = client(&broker, ProtocolVersion::V3_1_1, "filters-3").await;
    let codes = v311.subscribe(1, &filters).await;
    assert_eq!(
        codes,
        [
            ReasonCode(0x80),
            ReasonCode(0x80),
            ReasonCode::GRANTED_QOS_1
        ]
    );

    let mut v5 = client(&broker, ProtocolVersion::V5, "filters-5").await;
    let codes = v5.subscribe(1, &filters).await;
    assert_eq!(
        codes,
        [
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_1
        ]
    );
}

#[tokio::test]
async fn unauthorized_filters_are_refused() {
    let broker = TestBroker::start().await;
    let filters = [
        ("forbidden/#", QoS::AtMostOnce),
        ("allowed", QoS::ExactlyOnce),
    ];

    let mut v311 = client(&broker, ProtocolVersion::V3_1_1, "auth-3").await;
    let codes = v311.subscribe(1, &filters).await;
    assert_eq!(codes, [ReasonCode(0x80), ReasonCode::GRANTED_QOS_2]);

    let mut v5 = client(&broker, ProtocolVersion::V5, "auth-5").await;
    let codes = v5.subscribe(1, &filters).await;
    assert_eq!(
        codes,
        [ReasonCode::NOT_AUTHORIZED, ReasonCode::GRANTED_QOS_2]
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, ProtocolVersion::V5, "leaver").await;
    sub.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    let unsubscribe = Unsubscribe {
        packet_id: 2,
        filters: vec!["a/b".into(), "never/subscribed".into()],
        properties: Properties::default(),
    };
    sub.send(&Packet::Unsubscribe(unsubscribe)).await;
    let Some(Packet::UnsubAck(unsuback)) = sub.recv().await else {
        panic!("expected UNSUBACK");
    };
    assert_eq!(unsuback.packet_id, 2);
    assert_eq!(
        unsuback.reasons,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );

    let mut publisher = client(&broker, ProtocolVersion::V5, "pub").await;
    publisher.publish("a/b", QoS::AtMostOnce, 0, b"x").await;
    assert!(sub.try_recv(QUIET).await.is_none());
    assert_eq!(broker.instance.subscription_count(), 0);
}

#[tokio::test]
async fn v311_unsuback_for_unknown_filter() {
    let broker = TestBroker::start().await;
    let mut sub = client(&broker, ProtocolVersion::V3_1_1, "leaver-3").await;
    let unsubscribe = Unsubscribe {
        packet_id: 9,
        filters: vec!["x/y".into()],
        properties: Properties::default(),
    };
    sub.send(&Packet::Unsubscribe(unsubscribe)).await;
    let reply = sub.recv().await;
    assert!(
        matches!(&reply, Some(Packet::UnsubAck(ack)) if ack.packet_id == 9),
        "{reply:?}"
    );
}

#[tokio::test]
async fn p2p_topic_reaches_only_its_client() {
    let broker = TestBroker::start().await;
    let target_id = "GID_demo@@@device1";
    let mut target = client(&broker, ProtocolVersion::V3_1_1, target_id).await;
    let mut wildcard = client(&broker, ProtocolVersion::V3_1_1, "watcher").await;
    wildcard
        .subscribe(1, &[("sensors/#", QoS::AtLeastOnce)])
        .await;
    let mut publisher = client(&broker, ProtocolVersion::V3_1_1, "GID_demo@@@sender").await;

    let topic = format!("sensors/p2p/{target_id}");
    publisher
        .publish(&topic, QoS::AtLeastOnce, 1, b"direct")
        .await;
    publisher
        .publish("sensors/room1", QoS::AtMostOnce, 0, b"broadcast")
        .await;

    let direct = target.recv_publish().await;
    assert_eq!(direct.topic.as_str(), topic);
    assert_eq!(direct.qos, QoS::AtLeastOnce);
    assert_eq!(&direct.payload[..], b"direct");
    assert!(target.try_recv(QUIET).await.is_none());
    assert_eq!(&wildcard.recv_publish().await.payload[..], b"broadcast");
    assert!(wildcard.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn p2p_message_waits_in_persistent_session() {
    let broker = TestBroker::start().await;
    let target_id = "GID_demo@@@sleeper";
    let connect = connect_packet(ProtocolVersion::V3_1_1, target_id, false);
    let (target, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    drop(target);
    let instance = &broker.instance;
    common::wait_until("the target is offline", || {
        !instance.is_connected(target_id)
    })
    .await;

    let mut publisher = client(&broker, ProtocolVersion::V3_1_1, "GID_demo@@@sender").await;
    publisher
        .publish(
            &format!("sensors/p2p/{target_id}"),
            QoS::AtLeastOnce,
            1,
            b"later",
        )
        .await;
    let (mut target, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(connack.session_present);
    assert_eq!(&target.recv_publish().await.payload[..], b"later");
}

#[tokio::test]
async fn v5_no_local_skips_own_messages() {
    let broker = TestBroker::start().await;
    let mut client = client(&broker, ProtocolVersion::V5, "echo").await;
    let mut subscribe = common::subscribe_packet(1, &[("chat", QoS::AtMostOnce)]);
    if let Packet::Subscribe(subscribe) = &mut subscribe {
        subscribe.subscriptions[0].options.no_local = true;
    }
    client.send(&subscribe).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    client.publish("chat", QoS::AtMostOnce, 0, b"me").await;
    client.ping().await;
    assert!(client.try_recv(QUIET).await.is_none());
}
