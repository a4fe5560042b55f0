//! QoS 0, 1 and 2 flows in both directions, checked packet by packet with raw clients.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AllowAll, RawClient, TestBroker, connect_packet, publish_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Ack, Packet, ProtocolVersion, QoS, ReasonCode};

const QUIET: Duration = Duration::from_millis(200);

async fn subscriber(
    broker: &TestBroker,
    version: ProtocolVersion,
    id: &str,
    filter: &str,
    qos: QoS,
) -> RawClient {
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(version, id, true)).await;
    let granted = client.subscribe(1, &[(filter, qos)]).await;
    assert_eq!(granted, [ReasonCode(qos as u8)]);
    client
}

async fn publisher(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(version, id, true))
        .await
        .0
}

fn expect_ack(packet: Option<Packet>, kind: &str, packet_id: u16) -> Ack {
    let ack = match (kind, packet) {
        ("PUBACK", Some(Packet::PubAck(ack)))
        | ("PUBREC", Some(Packet::PubRec(ack)))
        | ("PUBREL", Some(Packet::PubRel(ack)))
        | ("PUBCOMP", Some(Packet::PubComp(ack))) => ack,
        (_, other) => panic!("expected {kind}, got {other:?}"),
    };
    assert_eq!(ack.packet_id, packet_id, "{kind} packet id");
    ack
}

#[tokio::test]
async fn delivery_qos_is_minimum_of_publish_and_subscription() {
    let broker = TestBroker::start().await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut sub0 = subscriber(&broker, version, "sub0", "t/qos", QoS::AtMostOnce).await;
        let mut sub2 = subscriber(&broker, version, "sub2", "t/qos", QoS::ExactlyOnce).await;
        let mut publisher = publisher(&broker, version, "pub").await;

        for (packet_id, qos) in [
            (1, QoS::AtMostOnce),
            (2, QoS::AtLeastOnce),
            (3, QoS::ExactlyOnce),
        ] {
            publisher.publish("t/qos", qos, packet_id, b"m").await;
            let low = sub0.recv_publish().await;
            assert_eq!(low.qos, QoS::AtMostOnce, "{version:?}");
            assert_eq!(low.packet_id, None);
            let high = sub2.recv_publish().await;
            assert_eq!(high.qos, qos, "{version:?}");
            assert!(!high.dup);
            assert!(!high.retain);
            assert_eq!(&high.payload[..], b"m");
            if let Some(id) = high.packet_id {
                if qos == QoS::AtLeastOnce {
                    sub2.send(&Packet::PubAck(Ack::new(id))).await;
                } else {
                    sub2.send(&Packet::PubRec(Ack::new(id))).await;
                    expect_ack(sub2.recv().await, "PUBREL", id);
                    sub2.send(&Packet::PubComp(Ack::new(id))).await;
                }
            }
        }
    }
}

#[tokio::test]
async fn qos2_duplicate_before_pubrel_is_not_delivered_again() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(
        &broker,
        ProtocolVersion::V3_1_1,
        "sub",
        "t/dup",
        QoS::ExactlyOnce,
    )
    .await;
    let mut publisher = publisher(&broker, ProtocolVersion::V3_1_1, "pub").await;

    let mut publish = publish_packet("t/dup", QoS::ExactlyOnce, Some(10), b"once");
    publisher.send(&Packet::Publish(publish.clone())).await;
    expect_ack(publisher.recv().await, "PUBREC", 10);
    publish.dup = true;
    publisher.send(&Packet::Publish(publish.clone())).await;
    expect_ack(publisher.recv().await, "PUBREC", 10);
    // 5.0 and 3.1.1 treat the id as in use until PUBREL, with or without DUP.
    publish.dup = false;
    publisher.send(&Packet::Publish(publish.clone())).await;
    expect_ack(publisher.recv().await, "PUBREC", 10);

    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"once");
    sub.send(&Packet::PubRec(Ack::new(
        first.packet_id.unwrap_or_default(),
    )))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    assert!(
        sub.try_recv(QUIET).await.is_none(),
        "duplicate was delivered"
    );

    // After PUBREL the id is free, and a PUBLISH with it is a new message.
    publisher.send(&Packet::PubRel(Ack::new(10))).await;
    expect_ack(publisher.recv().await, "PUBCOMP", 10);
    publisher.send(&Packet::Publish(publish)).await;
    expect_ack(publisher.recv().await, "PUBREC", 10);
    assert_eq!(&sub.recv_publish().await.payload[..], b"once");
}

#[tokio::test]
async fn pubrel_after_reconnect_completes() {
    let broker = TestBroker::start().await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut sub = subscriber(&broker, version, "sub", "t/rel", QoS::ExactlyOnce).await;
        let mut connect = connect_packet(version, "persistent-pub", false);
        connect.properties.session_expiry_interval = version.is_v5().then_some(60);
        let (mut publisher, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
        publisher
            .send(&Packet::Publish(publish_packet(
                "t/rel",
                QoS::ExactlyOnce,
                Some(5),
                b"x",
            )))
            .await;
        expect_ack(publisher.recv().await, "PUBREC", 5);
        drop(publisher);

        let instance = &broker.instance;
        common::wait_until("the publisher is offline", || {
            !instance.is_connected("persistent-pub")
        })
        .await;
        let (mut publisher, connack) = RawClient::connect_ok(broker.addr, connect).await;
        assert!(connack.session_present, "{version:?}");
        let mut resend = publish_packet("t/rel", QoS::ExactlyOnce, Some(5), b"x");
        resend.dup = true;
        publisher.send(&Packet::Publish(resend)).await;
        expect_ack(publisher.recv().await, "PUBREC", 5);
        publisher.send(&Packet::PubRel(Ack::new(5))).await;
        let comp = expect_ack(publisher.recv().await, "PUBCOMP", 5);
        assert_eq!(comp.reason, ReasonCode::SUCCESS, "{version:?}");

        // Delivered once, at the first PUBLISH.
        let delivered = sub.recv_publish().await;
        let id = delivered.packet_id.unwrap_or_default();
        sub.send(&Packet::PubRec(Ack::new(id))).await;
        expect_ack(sub.recv().await, "PUBREL", id);
        sub.send(&Packet::PubComp(Ack::new(id))).await;
        assert!(
            sub.try_recv(QUIET).await.is_none(),
            "{version:?}: delivered twice"
        );

        // Clean up the persistent session for the next version.
        let clean = connect_packet(version, "persistent-pub", true);
        let _ = RawClient::connect_ok(broker.addr, clean).await;
    }
}

#[tokio::test]
async fn unknown_pubrel_gets_pubcomp() {
    let broker = TestBroker::start().await;
    let mut v5 = publisher(&broker, ProtocolVersion::V5, "rel-5").await;
    v5.send(&Packet::PubRel(Ack::new(77))).await;
    let comp = expect_ack(v5.recv().await, "PUBCOMP", 77);
    assert_eq!(comp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);

    let mut v311 = publisher(&broker, ProtocolVersion::V3_1_1, "rel-3").await;
    v311.send(&Packet::PubRel(Ack::new(77))).await;
    expect_ack(v311.recv().await, "PUBCOMP", 77);
}

#[tokio::test]
async fn unknown_acknowledgements_are_ignored() {
    let broker = TestBroker::start().await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut client = publisher(&broker, version, "acks").await;
        client.send(&Packet::PubAck(Ack::new(9))).await;
        client.send(&Packet::PubComp(Ack::new(9))).await;
        client.ping().await;
    }
}

#[tokio::test]
async fn v5_unknown_pubrec_gets_pubrel_not_found() {
    let broker = TestBroker::start().await;
    let mut client = publisher(&broker, ProtocolVersion::V5, "rec").await;
    client.send(&Packet::PubRec(Ack::new(4))).await;
    let rel = expect_ack(client.recv().await, "PUBREL", 4);
    assert_eq!(rel.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_on_resume() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "resumer", false);
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    sub.subscribe(1, &[("t/resend", QoS::ExactlyOnce)]).await;
    let mut publisher = publisher(&broker, ProtocolVersion::V3_1_1, "pub").await;
    publisher
        .publish("t/resend", QoS::AtLeastOnce, 1, b"one")
        .await;
    publisher
        .publish("t/resend", QoS::ExactlyOnce, 2, b"two")
        .await;

    // Leave the QoS 1 message unacknowledged and the QoS 2 one at PUBREL.
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    let second_id = second.packet_id.unwrap_or_default();
    sub.send(&Packet::PubRec(Ack::new(second_id))).await;
    expect_ack(sub.recv().await, "PUBREL", second_id);
    drop(sub);

    let instance = &broker.instance;
    common::wait_until("the subscriber is offline", || {
        !instance.is_connected("resumer")
    })
    .await;
    let (mut sub, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(connack.session_present);
    let resent = sub.recv_publish().await;
    assert!(resent.dup);
    assert_eq!(resent.packet_id, first.packet_id);
    assert_eq!(&resent.payload[..], b"one");
    expect_ack(sub.recv().await, "PUBREL", second_id);
    sub.send(&Packet::PubAck(Ack::new(
        resent.packet_id.unwrap_or_default(),
    )))
    .await;
    sub.send(&Packet::PubComp(Ack::new(second_id))).await;
    sub.ping().await;
    assert!(sub.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn v5_window_follows_receive_maximum() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "narrow", true);
    connect.properties.receive_maximum = Some(2);
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect).await;
    sub.subscribe(1, &[("t/window", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(&broker, ProtocolVersion::V5, "pub").await;
    for id in 1..=4 {
        publisher
            .publish("t/window", QoS::AtLeastOnce, id, &[id as u8])
            .await;
    }

    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert!(sub.try_recv(QUIET).await.is_none(), "window of 2 exceeded");
    sub.send(&Packet::PubAck(Ack::new(
        first.packet_id.unwrap_or_default(),
    )))
    .await;
    let third = sub.recv_publish().await;
    assert_eq!(&third.payload[..], &[3]);
    assert!(sub.try_recv(QUIET).await.is_none(), "window of 2 exceeded");
    sub.send(&Packet::PubAck(Ack::new(
        second.packet_id.unwrap_or_default(),
    )))
    .await;
    assert_eq!(&sub.recv_publish().await.payload[..], &[4]);
}

#[tokio::test]
async fn publish_over_client_maximum_packet_size_is_dropped() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "small", true);
    connect.properties.maximum_packet_size = Some(64);
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect).await;
    sub.subscribe(1, &[("t/size", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(&broker, ProtocolVersion::V5, "pub").await;
    publisher
        .publish("t/size", QoS::AtLeastOnce, 1, &[0u8; 200])
        .await;
    publisher
        .publish("t/size", QoS::AtLeastOnce, 2, b"fits")
        .await;

    let delivered = sub.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"fits");
    assert_eq!(delivered.packet_id, Some(1));
}

#[tokio::test]
async fn v311_unauthorized_publish_closes_connection() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(
        &broker,
        ProtocolVersion::V3_1_1,
        "sub",
        "#",
        QoS::AtLeastOnce,
    )
    .await;
    let mut client = publisher(&broker, ProtocolVersion::V3_1_1, "pub").await;
    let publish = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(1), b"x");
    client.send(&Packet::Publish(publish)).await;
    assert!(client.expect_closed().await.is_empty());
    assert!(sub.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn v5_unauthorized_publish_is_refused_with_0x87() {
    let broker = TestBroker::start().await;
    let mut sub = subscriber(&broker, ProtocolVersion::V5, "sub", "#", QoS::AtLeastOnce).await;
    let mut client = publisher(&broker, ProtocolVersion::V5, "pub").await;

    let publish = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(1), b"x");
    client.send(&Packet::Publish(publish)).await;
    let puback = expect_ack(client.recv().await, "PUBACK", 1);
    assert_eq!(puback.reason, ReasonCode::NOT_AUTHORIZED);

    let publish = publish_packet("forbidden/x", QoS::ExactlyOnce, Some(2), b"x");
    client.send(&Packet::Publish(publish)).await;
    let pubrec = expect_ack(client.recv().await, "PUBREC", 2);
    assert_eq!(pubrec.reason, ReasonCode::NOT_AUTHORIZED);

    client
        .send(&Packet::Publish(publish_packet(
            "forbidden/x",
            QoS::AtMostOnce,
            None,
            b"x",
        )))
        .await;
    client.ping().await;
    assert!(sub.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn v5_receive_maximum_exceeded_disconnects() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.receive_maximum = 2;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let mut client = publisher(&broker, ProtocolVersion::V5, "flood").await;
    for id in 1..=2 {
        client
            .send(&Packet::Publish(publish_packet(
                "t",
                QoS::ExactlyOnce,
                Some(id),
                b"x",
            )))
            .await;
        expect_ack(client.recv().await, "PUBREC", id);
    }
    client
        .send(&Packet::Publish(publish_packet(
            "t",
            QoS::ExactlyOnce,
            Some(3),
            b"x",
        )))
        .await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
}

#[tokio::test]
async fn v5_qos1_reusing_unreleased_id_is_refused() {
    let broker = TestBroker::start().await;
    let mut client = publisher(&broker, ProtocolVersion::V5, "reuse").await;
    client
        .send(&Packet::Publish(publish_packet(
            "t",
            QoS::ExactlyOnce,
            Some(8),
            b"x",
        )))
        .await;
    expect_ack(client.recv().await, "PUBREC", 8);
    client
        .send(&Packet::Publish(publish_packet(
            "t",
            QoS::AtLeastOnce,
            Some(8),
            b"x",
        )))
        .await;
    let puback = expect_ack(client.recv().await, "PUBACK", 8);
    assert_eq!(puback.reason, ReasonCode::PACKET_IDENTIFIER_IN_USE);
}
