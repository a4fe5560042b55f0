//! The limits of an instance over the wire: topic length and levels, client id length,
//! subscriptions per client, connections per instance, and connection and publish rates.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use bytes::BytesMut;
use common::{AllowAll, RawClient, TestBroker, connect_packet, publish_packet, wait_until};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode, Will, encode_packet};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

async fn broker_with(change: impl FnOnce(&mut InstanceSettings)) -> TestBroker {
    let mut settings = InstanceSettings::new("mqtt-test");
    change(&mut settings);
    TestBroker::start_with(settings, Arc::new(AllowAll)).await
}

async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(version, id, true))
        .await
        .0
}

#[tokio::test]
async fn long_publish_topic_gets_0x90() {
    let broker = broker_with(|settings| settings.max_topic_length = 8).await;
    let mut v5 = client(&broker, V5, "v5").await;
    let long = publish_packet("a/bcdefghi", QoS::AtLeastOnce, Some(1), b"x");
    v5.send(&Packet::Publish(long)).await;
    let Some(Packet::PubAck(puback)) = v5.recv().await else {
        panic!("expected PUBACK");
    };
    assert_eq!(puback.reason, ReasonCode::TOPIC_NAME_INVALID);
    assert!(puback.properties.reason_string.is_some());
    v5.publish("a/bcdefg", QoS::AtLeastOnce, 2, b"x").await;

    let mut v311 = client(&broker, V311, "v311").await;
    let long = publish_packet("a/bcdefghi", QoS::AtMostOnce, None, b"x");
    v311.send(&Packet::Publish(long)).await;
    assert!(v311.expect_closed().await.is_empty());
}

#[tokio::test]
async fn deep_topic_gets_0x90_and_0x8f() {
    let broker = broker_with(|settings| settings.max_topic_levels = 3).await;
    let mut client = client(&broker, V5, "deep").await;
    let codes = client
        .subscribe(
            1,
            &[
                ("a/b/c", QoS::AtMostOnce),
                ("a/b/c/d", QoS::AtMostOnce),
                ("$share/g/a/b/c", QoS::AtMostOnce),
                ("$share/g/a/b/c/#", QoS::AtMostOnce),
            ],
        )
        .await;
    let invalid = ReasonCode::TOPIC_FILTER_INVALID;
    let granted = ReasonCode::GRANTED_QOS_0;
    assert_eq!(codes, [granted, invalid, granted, invalid]);

    let deep = publish_packet("a/b/c/d", QoS::ExactlyOnce, Some(1), b"x");
    client.send(&Packet::Publish(deep)).await;
    let Some(Packet::PubRec(pubrec)) = client.recv().await else {
        panic!("expected PUBREC");
    };
    assert_eq!(pubrec.reason, ReasonCode::TOPIC_NAME_INVALID);
}

#[tokio::test]
async fn long_will_topic_gets_connack_0x90() {
    let broker = broker_with(|settings| settings.max_topic_length = 8).await;
    let mut connect = connect_packet(V5, "testament", true);
    connect.will = Some(Will {
        topic: "status/testament".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
    assert_eq!(connack.reason, ReasonCode::TOPIC_NAME_INVALID);
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn long_client_id_is_rejected() {
    let broker = broker_with(|settings| settings.max_client_id_length = 10).await;
    for version in [V311, V5] {
        let connect = connect_packet(version, "GID_a@@@0123456789", true);
        let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
        // 3.1.1 return code 2 decodes back to 0x85.
        assert_eq!(
            connack.reason,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            "{version:?}"
        );
        assert!(client.expect_closed().await.is_empty());
    }
    client(&broker, V5, "GID_a@@@01").await.ping().await;
}

#[tokio::test]
async fn subscriptions_over_quota_get_0x97() {
    let broker = broker_with(|settings| settings.max_subscriptions_per_client = 2).await;
    let mut client = client(&broker, V5, "collector").await;
    let codes = client
        .subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtMostOnce),
                ("c", QoS::AtMostOnce),
            ],
        )
        .await;
    let granted = ReasonCode::GRANTED_QOS_0;
    assert_eq!(codes, [granted, granted, ReasonCode::QUOTA_EXCEEDED]);

    // Replacing a subscription does not count against the quota.
    let codes = client.subscribe(2, &[("a", QoS::AtLeastOnce)]).await;
    assert_eq!(codes, [ReasonCode::GRANTED_QOS_1]);
    assert_eq!(broker.instance.subscription_count(), 2);

    let mut old = self::client(&broker, V311, "old-collector").await;
    let codes = old
        .subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtMostOnce),
                ("c", QoS::AtMostOnce),
            ],
        )
        .await;
    // 3.1.1 has one failure code, 0x80.
    assert_eq!(codes[2], ReasonCode::UNSPECIFIED_ERROR);
}

#[tokio::test]
async fn connections_over_maximum_get_quota_exceeded() {
    let broker = broker_with(|settings| settings.max_connections = 2).await;
    let _first = client(&broker, V5, "first").await;
    let mut second = client(&broker, V311, "second").await;
    second.ping().await;

    let (mut v5, connack) =
        RawClient::connect(broker.addr, connect_packet(V5, "third", true)).await;
    assert_eq!(connack.reason, ReasonCode::QUOTA_EXCEEDED);
    assert!(v5.expect_closed().await.is_empty());
    let (mut v311, connack) =
        RawClient::connect(broker.addr, connect_packet(V311, "fourth", true)).await;
    // 3.1.1 return code 3 (server unavailable) decodes back to 0x88.
    assert_eq!(connack.reason, ReasonCode::SERVER_UNAVAILABLE);
    assert!(v311.expect_closed().await.is_empty());

    // Taking over "second" replaces a connection, so it is accepted at the limit.
    let (mut takeover, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V311, "second", true)).await;
    takeover.ping().await;
    let instance = &broker.instance;
    wait_until("the old connection is gone", || {
        instance.connected_count() == 2
    })
    .await;
}

#[tokio::test]
async fn connection_rate_over_maximum_gets_0x9f() {
    let broker = broker_with(|settings| settings.max_connection_rate = 1).await;
    let _first = client(&broker, V5, "first").await;
    let (mut second, connack) =
        RawClient::connect(broker.addr, connect_packet(V5, "second", true)).await;
    assert_eq!(connack.reason, ReasonCode::CONNECTION_RATE_EXCEEDED);
    assert!(second.expect_closed().await.is_empty());
}

#[tokio::test]
async fn publish_rate_over_maximum_disconnects() {
    let broker = broker_with(|settings| settings.max_publish_rate = 5).await;
    for version in [V5, V311] {
        let mut client = client(&broker, version, "chatterbox").await;
        let mut burst = BytesMut::new();
        for _ in 0..20 {
            let publish = publish_packet("chatter", QoS::AtMostOnce, None, b"x");
            encode_packet(&Packet::Publish(publish), version, &mut burst);
        }
        client.send_bytes(&burst).await;
        let packets = client.expect_closed().await;
        if version.is_v5() {
            let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
                panic!("expected one DISCONNECT, got {packets:?}");
            };
            assert_eq!(disconnect.reason, ReasonCode::MESSAGE_RATE_TOO_HIGH);
        } else {
            assert!(packets.is_empty(), "{packets:?}");
        }
    }
}
