//! MQTT 5.0 Topic Aliases over the wire, in both directions.

mod common;

use std::sync::Arc;

use common::{AllowAll, RawClient, TestBroker, connect_packet, publish_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Packet, ProtocolVersion, Publish, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Builds a QoS 0 PUBLISH with `topic` (empty to use the alias alone) and `alias`.
fn aliased(topic: &str, alias: Option<u16>, payload: &[u8]) -> Packet {
    let mut publish = publish_packet(topic, QoS::AtMostOnce, None, payload);
    publish.properties.topic_alias = alias;
    Packet::Publish(publish)
}

async fn subscriber(broker: &TestBroker, filter: &str) -> RawClient {
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "subscriber", true)).await;
    client.subscribe(1, &[(filter, QoS::AtMostOnce)]).await;
    client
}

async fn publisher(broker: &TestBroker) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(V5, "publisher", true))
        .await
        .0
}

/// Sends `packet` and returns the reason of the DISCONNECT that closes the connection.
async fn disconnect_reason(client: &mut RawClient, packet: &Packet) -> ReasonCode {
    client.send(packet).await;
    let packets = client.expect_closed().await;
    match packets.as_slice() {
        [Packet::Disconnect(disconnect)] => disconnect.reason,
        other => panic!("expected one DISCONNECT, got {other:?}"),
    }
}

#[tokio::test]
async fn inbound_alias_is_set_and_reused() {
    let broker = TestBroker::start().await;
    let mut subscriber = subscriber(&broker, "sensors/#").await;
    let mut publisher = publisher(&broker).await;
    publisher
        .send(&aliased("sensors/t1", Some(1), b"one"))
        .await;
    publisher.send(&aliased("", Some(1), b"two")).await;
    publisher
        .send(&aliased("sensors/t2", Some(1), b"three"))
        .await;
    publisher.send(&aliased("", Some(1), b"four")).await;
    publisher.ping().await;

    let expected = [
        ("sensors/t1", "one"),
        ("sensors/t1", "two"),
        ("sensors/t2", "three"),
        ("sensors/t2", "four"),
    ];
    for (topic, payload) in expected {
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.topic.as_str(), topic);
        assert_eq!(&publish.payload[..], payload.as_bytes());
        assert_eq!(publish.properties.topic_alias, None);
    }
}

#[tokio::test]
async fn inbound_alias_above_maximum_disconnects_with_0x94() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.topic_alias_maximum = 3;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let (_, connack) = RawClient::connect_ok(broker.addr, connect_packet(V5, "probe", true)).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(3));

    let mut client = publisher(&broker).await;
    let reason = disconnect_reason(&mut client, &aliased("a/b", Some(4), b"x")).await;
    assert_eq!(reason, ReasonCode::TOPIC_ALIAS_INVALID);
}

#[tokio::test]
async fn inbound_alias_zero_disconnects_with_0x94() {
    let broker = TestBroker::start().await;
    let mut client = publisher(&broker).await;
    // PUBLISH QoS 0, topic "a", properties: Topic Alias 0.
    client
        .send_bytes(&[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00])
        .await;
    let packets = client.expect_closed().await;
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID),
        "{packets:?}"
    );
}

#[tokio::test]
async fn inbound_aliases_off_disconnect_with_0x94() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.topic_alias_maximum = 0;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let (mut client, connack) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "p", true)).await;
    assert_eq!(connack.properties.topic_alias_maximum, None);
    let reason = disconnect_reason(&mut client, &aliased("a/b", Some(1), b"x")).await;
    assert_eq!(reason, ReasonCode::TOPIC_ALIAS_INVALID);
}

#[tokio::test]
async fn unknown_inbound_alias_is_protocol_error() {
    let broker = TestBroker::start().await;
    let mut client = publisher(&broker).await;
    let reason = disconnect_reason(&mut client, &aliased("", Some(2), b"x")).await;
    assert_eq!(reason, ReasonCode::PROTOCOL_ERROR);
}

#[tokio::test]
async fn inbound_aliases_do_not_survive_reconnect() {
    let broker = TestBroker::start().await;
    let mut first = publisher(&broker).await;
    first.send(&aliased("a/b", Some(1), b"x")).await;
    first.ping().await;
    drop(first);
    let mut second = publisher(&broker).await;
    let reason = disconnect_reason(&mut second, &aliased("", Some(1), b"y")).await;
    assert_eq!(reason, ReasonCode::PROTOCOL_ERROR);
}

/// Connects a subscriber that accepts `maximum` topic aliases and subscribes to `filter`.
async fn aliasing_subscriber(broker: &TestBroker, maximum: u16, filter: &str) -> RawClient {
    let mut connect = connect_packet(V5, "aliasing", true);
    connect.properties.topic_alias_maximum = Some(maximum);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.subscribe(1, &[(filter, QoS::AtMostOnce)]).await;
    client
}

async fn recv_all(client: &mut RawClient, count: usize) -> Vec<Publish> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        received.push(client.recv_publish().await);
    }
    received
}

#[tokio::test]
async fn outbound_alias_replaces_repeated_topic() {
    let broker = TestBroker::start().await;
    let mut subscriber = aliasing_subscriber(&broker, 5, "sensors/#").await;
    let mut publisher = publisher(&broker).await;
    for (topic, payload) in [("sensors/a", "1"), ("sensors/a", "2"), ("sensors/b", "3")] {
        publisher
            .publish(topic, QoS::AtMostOnce, 0, payload.as_bytes())
            .await;
    }
    publisher
        .publish("sensors/a", QoS::AtMostOnce, 0, b"4")
        .await;

    let received = recv_all(&mut subscriber, 4).await;
    let seen: Vec<(&str, Option<u16>)> = received
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias))
        .collect();
    assert_eq!(
        seen,
        [
            ("sensors/a", Some(1)),
            ("", Some(1)),
            ("sensors/b", Some(2)),
            ("", Some(1)),
        ]
    );
}

#[tokio::test]
async fn outbound_aliases_reuse_least_recently_used() {
    let broker = TestBroker::start().await;
    let mut subscriber = aliasing_subscriber(&broker, 2, "t/#").await;
    let mut publisher = publisher(&broker).await;
    for topic in ["t/a", "t/b", "t/a", "t/c", "t/b"] {
        publisher.publish(topic, QoS::AtMostOnce, 0, b"x").await;
    }

    let received = recv_all(&mut subscriber, 5).await;
    let seen: Vec<(&str, Option<u16>)> = received
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias))
        .collect();
    // "t/c" takes the alias of "t/b", the least recently used, and "t/b" then takes the alias
    // of "t/a".
    assert_eq!(
        seen,
        [
            ("t/a", Some(1)),
            ("t/b", Some(2)),
            ("", Some(1)),
            ("t/c", Some(2)),
            ("t/b", Some(1)),
        ]
    );
}

#[tokio::test]
async fn no_outbound_aliases_without_client_maximum() {
    let broker = TestBroker::start().await;
    let mut subscriber = subscriber(&broker, "t/#").await;
    let mut publisher = publisher(&broker).await;
    publisher.publish("t/a", QoS::AtMostOnce, 0, b"1").await;
    publisher.publish("t/a", QoS::AtMostOnce, 0, b"2").await;
    for publish in recv_all(&mut subscriber, 2).await {
        assert_eq!(publish.topic.as_str(), "t/a");
        assert_eq!(publish.properties.topic_alias, None);
    }
}

#[tokio::test]
async fn outbound_aliases_capped_by_setting() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_outbound_topic_aliases = 1;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let mut subscriber = aliasing_subscriber(&broker, 100, "t/#").await;
    let mut publisher = publisher(&broker).await;
    for topic in ["t/a", "t/b"] {
        publisher.publish(topic, QoS::AtMostOnce, 0, b"x").await;
    }
    let aliases: Vec<Option<u16>> = recv_all(&mut subscriber, 2)
        .await
        .iter()
        .map(|p| p.properties.topic_alias)
        .collect();
    assert_eq!(aliases, [Some(1), Some(1)]);
}

#[tokio::test]
async fn rumqttc_receives_aliased_publishes() {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet as RumqttcPacket;

    let broker = TestBroker::start().await;
    let mut options =
        rumqttc::v5::MqttOptions::new("rumqttc-aliases", "127.0.0.1", broker.addr.port());
    options.set_topic_alias_max(Some(10));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    client
        .subscribe("t/#", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await
        .expect("subscribe");

    // Publish three messages once the subscription is in place, then collect the topic and
    // Topic Alias of each PUBLISH that rumqttc receives.
    let mut publisher = publisher(&broker).await;
    let mut received = Vec::new();
    let collect = async {
        while received.len() < 3 {
            let event = eventloop.poll().await.expect("rumqttc event loop");
            match event {
                Event::Incoming(RumqttcPacket::SubAck(_)) => {
                    for payload in [b"1", b"2", b"3"] {
                        publisher.publish("t/a", QoS::AtMostOnce, 0, payload).await;
                    }
                }
                Event::Incoming(RumqttcPacket::Publish(publish)) => {
                    let alias = publish.properties.and_then(|p| p.topic_alias);
                    received.push((publish.topic, alias));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(common::WAIT, collect)
        .await
        .expect("three messages within 5 s");

    assert_eq!(&received[0].0[..], b"t/a");
    assert_eq!(received[0].1, Some(1));
    assert_eq!(received[1].1, Some(1));
    assert_eq!(received[2].1, Some(1));
}
