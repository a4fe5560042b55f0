//! Invalid packets after CONNECT: each closes only its own connection, and 5.0 clients get a
//! DISCONNECT with the reason code first.

mod common;

use std::sync::Arc;

use common::{AllowAll, RawClient, TestBroker, connect_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

/// Connects a 3.1.1 and a 5.0 client, sends `bytes` from each, and checks that the 3.1.1
/// connection closes silently and the 5.0 one gets DISCONNECT `v5_reason`, while a bystander
/// connection stays up.
async fn assert_rejected(broker: &TestBroker, bytes: &[u8], v5_reason: ReasonCode) {
    let bystander_connect = connect_packet(ProtocolVersion::V3_1_1, "bystander", true);
    let (mut bystander, _) = RawClient::connect_ok(broker.addr, bystander_connect).await;

    let connect = connect_packet(ProtocolVersion::V3_1_1, "bad-3", true);
    let (mut v311, _) = RawClient::connect_ok(broker.addr, connect).await;
    v311.send_bytes(bytes).await;
    assert!(
        v311.expect_closed().await.is_empty(),
        "3.1.1 client got packets for {bytes:02X?}"
    );

    let connect = connect_packet(ProtocolVersion::V5, "bad-5", true);
    let (mut v5, _) = RawClient::connect_ok(broker.addr, connect).await;
    v5.send_bytes(bytes).await;
    let packets = v5.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT for {bytes:02X?}, got {packets:?}");
    };
    assert_eq!(disconnect.reason, v5_reason, "for {bytes:02X?}");

    bystander.ping().await;
}

#[tokio::test]
async fn five_byte_remaining_length_is_malformed() {
    let broker = TestBroker::start().await;
    assert_rejected(
        &broker,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn reserved_fixed_header_flags_are_malformed() {
    let broker = TestBroker::start().await;
    // PINGREQ with flags 0b0001.
    assert_rejected(&broker, &[0xC1, 0x00], ReasonCode::MALFORMED_PACKET).await;
    // SUBSCRIBE with flags 0b0000 instead of 0b0010.
    let subscribe = [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00];
    assert_rejected(&broker, &subscribe, ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test]
async fn qos3_publish_is_malformed() {
    let broker = TestBroker::start().await;
    assert_rejected(
        &broker,
        &[0x36, 0x03, 0x00, 0x01, b'a'],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn null_character_in_topic_is_rejected() {
    let broker = TestBroker::start().await;
    // PUBLISH QoS 0, topic "a\0b". The 5.0 body ends with an empty property length.
    let v311 = [0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'];
    let connect = connect_packet(ProtocolVersion::V3_1_1, "null-3", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.send_bytes(&v311).await;
    assert!(client.expect_closed().await.is_empty());

    let v5 = [0x30, 0x06, 0x00, 0x03, b'a', 0x00, b'b', 0x00];
    let connect = connect_packet(ProtocolVersion::V5, "null-5", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.send_bytes(&v5).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert!(
        [ReasonCode::MALFORMED_PACKET, ReasonCode::TOPIC_NAME_INVALID].contains(&disconnect.reason),
        "{disconnect:?}"
    );
}

#[tokio::test]
async fn wildcard_in_publish_topic_is_topic_name_invalid() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "wild", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let publish = common::publish_packet("a/+", QoS::AtMostOnce, None, b"x");
    client.send(&Packet::Publish(publish)).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::TOPIC_NAME_INVALID);
}

#[tokio::test]
async fn oversized_packet_is_packet_too_large() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_packet_size = 64;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let payload = vec![b'x'; 100];
    let mut publish = vec![0x30, 103, 0x00, 0x01, b'a'];
    publish.extend_from_slice(&payload);
    assert_rejected(&broker, &publish, ReasonCode::PACKET_TOO_LARGE).await;
}

#[tokio::test]
async fn server_only_packets_are_protocol_errors() {
    let broker = TestBroker::start().await;
    // PINGRESP, which only servers send.
    assert_rejected(&broker, &[0xD0, 0x00], ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn packet_id_zero_is_rejected() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "zero-id", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    // PUBLISH QoS 1, topic "a", packet id 0.
    client
        .send_bytes(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00])
        .await;
    assert!(client.expect_closed().await.is_empty());
}
