//! CONNECT handling: CONNACK codes, client identifiers, bad CONNECT packets, keep-alive and the
//! hand-over of already read bytes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{RawClient, RejectAll, TestBroker, connect_packet, subscribe_packet, wait_until};
use switchyard_broker::{InstanceSettings, Origin, read_connect};
use switchyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode, encode_packet};
use tokio::net::TcpListener;

#[tokio::test]
async fn v311_connect_is_accepted() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "c1", true);
    let (mut client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(!connack.session_present);
    client.ping().await;
    assert!(broker.instance.is_connected("c1"));
    assert_eq!(broker.instance.connected_count(), 1);
}

#[tokio::test]
async fn v31_connect_is_accepted() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1, "c31", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.ping().await;
}

#[tokio::test]
async fn v31_client_id_over_23_chars_is_rejected() {
    let broker = TestBroker::start().await;
    for client_id in ["", "GID_demo@@@device-0000001"] {
        let connect = connect_packet(ProtocolVersion::V3_1, client_id, true);
        let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
        // 3.1 return code 2 (Identifier Rejected) decodes back to 0x85.
        assert_eq!(
            connack.reason,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            "{client_id:?}"
        );
        assert!(client.expect_closed().await.is_empty(), "{client_id:?}");
    }
    let connect = connect_packet(ProtocolVersion::V3_1, &"c".repeat(23), true);
    RawClient::connect_ok(broker.addr, connect).await;
}

#[tokio::test]
async fn v31_long_client_id_is_accepted_when_not_strict() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.strict_mqtt31_client_ids = false;
    let broker = TestBroker::start_with(settings, Arc::new(common::AllowAll)).await;
    let connect = connect_packet(ProtocolVersion::V3_1, "GID_demo@@@device-0000001", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.ping().await;
    assert!(broker.instance.is_connected("GID_demo@@@device-0000001"));
}

#[tokio::test]
async fn v5_connack_announces_limits() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "c5", true);
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    let properties = connack.properties;
    assert_eq!(properties.receive_maximum, Some(128));
    assert_eq!(properties.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(properties.retain_available, Some(1));
    assert_eq!(properties.shared_subscription_available, Some(1));
    assert_eq!(properties.topic_alias_maximum, Some(10));
    assert_eq!(properties.assigned_client_identifier, None);
    assert_eq!(properties.response_information, None);
}

#[tokio::test]
async fn rejected_credentials_get_connack_code() {
    let settings = InstanceSettings::new("mqtt-test");
    let broker = TestBroker::start_with(settings, Arc::new(RejectAll)).await;

    let v311 = connect_packet(ProtocolVersion::V3_1_1, "c1", true);
    let (mut client, connack) = RawClient::connect(broker.addr, v311).await;
    // 3.1.1 return code 4 decodes back to 0x86.
    assert_eq!(connack.reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(client.expect_closed().await.is_empty());

    let v5 = connect_packet(ProtocolVersion::V5, "c2", true);
    let (mut client, connack) = RawClient::connect(broker.addr, v5).await;
    assert_eq!(connack.reason, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    assert!(!connack.session_present);
    assert!(client.expect_closed().await.is_empty());
    assert_eq!(broker.instance.connected_count(), 0);
}

#[tokio::test]
async fn v311_empty_id_with_persistent_session_is_rejected() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "", false);
    let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
    assert_eq!(connack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn v311_empty_id_with_clean_session_is_assigned() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.ping().await;
    assert_eq!(broker.instance.connected_count(), 1);
}

#[tokio::test]
async fn v5_empty_id_is_assigned_and_returned() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "", false);
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    let assigned = connack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!assigned.is_empty());
    assert!(broker.instance.is_connected(&assigned));
}

#[tokio::test]
async fn wrong_protocol_name_closes_without_connack() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    let mut connect = vec![0x10, 0x0C, 0x00, 0x04];
    connect.extend_from_slice(b"MQTX");
    connect.extend_from_slice(&[0x04, 0x02, 0x00, 0x3C, 0x00, 0x00]);
    client.send_bytes(&connect).await;
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn unsupported_level_gets_version_connack() {
    let broker = TestBroker::start().await;

    // Level 6 gets a 5.0 CONNACK with reason 0x84.
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    let mut connect = vec![0x10, 0x0D, 0x00, 0x04];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[0x06, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00]);
    client.send_bytes(&connect).await;
    let packets = client.expect_closed().await;
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("expected one CONNACK, got {packets:?}");
    };
    assert_eq!(connack.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);

    // Level 2 gets a 3.1.1 CONNACK with return code 1.
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    let mut connect = vec![0x10, 0x0C, 0x00, 0x04];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[0x02, 0x02, 0x00, 0x3C, 0x00, 0x00]);
    client.send_bytes(&connect).await;
    let packets = client.expect_closed().await;
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("expected one CONNACK, got {packets:?}");
    };
    assert_eq!(connack.reason, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
}

#[tokio::test]
async fn reserved_connect_flag_closes_v311() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    let mut connect = vec![0x10, 0x0C, 0x00, 0x04];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[0x04, 0x03, 0x00, 0x3C, 0x00, 0x00]);
    client.send_bytes(&connect).await;
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn reserved_connect_flag_gets_v5_connack() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    let mut connect = vec![0x10, 0x0D, 0x00, 0x04];
    connect.extend_from_slice(b"MQTT");
    connect.extend_from_slice(&[0x05, 0x03, 0x00, 0x3C, 0x00, 0x00, 0x00]);
    client.send_bytes(&connect).await;
    let packets = client.expect_closed().await;
    let [Packet::ConnAck(connack)] = packets.as_slice() else {
        panic!("expected one CONNACK, got {packets:?}");
    };
    assert_eq!(connack.reason, ReasonCode::MALFORMED_PACKET);
}

#[tokio::test]
async fn silent_connection_times_out() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.connect_timeout = Duration::from_millis(200);
    let broker = TestBroker::start_with(settings, Arc::new(common::AllowAll)).await;
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn second_connect_is_protocol_error() {
    let broker = TestBroker::start().await;

    let connect = connect_packet(ProtocolVersion::V3_1_1, "twice-3", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    assert!(client.expect_closed().await.is_empty());

    let connect = connect_packet(ProtocolVersion::V5, "twice-5", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR);
}

#[tokio::test]
async fn bytes_after_connect_are_handled_first() {
    let broker = TestBroker::start().await;
    let mut client = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;

    // CONNECT, SUBSCRIBE and PINGREQ in one write, so they arrive in one read.
    let mut wire = BytesMut::new();
    let connect = connect_packet(ProtocolVersion::V3_1_1, "eager", true);
    encode_packet(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V3_1_1,
        &mut wire,
    );
    let subscribe = subscribe_packet(1, &[("a/b", QoS::AtLeastOnce)]);
    encode_packet(&subscribe, ProtocolVersion::V3_1_1, &mut wire);
    encode_packet(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut wire);
    client.send_bytes(&wire).await;

    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    assert!(matches!(client.recv().await, Some(Packet::PingResp)));
}

#[tokio::test]
async fn accepted_connection_keeps_its_origin() {
    let broker = TestBroker::start().await;
    let global = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let global_addr = global.local_addr().expect("address");
    let instance = Arc::clone(&broker.instance);
    tokio::spawn(async move {
        let (mut stream, peer) = global.accept().await.expect("accept");
        let (connect, buffered) = read_connect(&mut stream, Duration::from_secs(5), 1024)
            .await
            .expect("CONNECT");
        let origin = Origin::Global {
            group: "global".to_owned(),
        };
        instance.accept_connection(stream, peer, connect, buffered, origin);
    });

    let connect = connect_packet(ProtocolVersion::V5, "via-global", true);
    let (mut via_global, _) = RawClient::connect_ok(global_addr, connect).await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "via-region", true);
    let (mut via_region, _) = RawClient::connect_ok(broker.addr, connect).await;
    via_global.ping().await;
    via_region.ping().await;

    let global_origin = Origin::Global {
        group: "global".to_owned(),
    };
    let handles = broker.instance.connections(&global_origin);
    assert_eq!(handles.len(), 1);
    assert_eq!(handles[0].client_id(), "via-global");
    assert_eq!(handles[0].protocol(), ProtocolVersion::V5);
    let region = broker.instance.connections(&Origin::Region);
    assert_eq!(region.len(), 1);
    assert_eq!(region[0].client_id(), "via-region");
    let other_group = Origin::Global {
        group: "other".to_owned(),
    };
    assert!(broker.instance.connections(&other_group).is_empty());
}

#[tokio::test]
async fn handle_disconnect_sends_reason_to_v5() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "moved", true);
    let (mut v5, _) = RawClient::connect_ok(broker.addr, connect).await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "moved-3", true);
    let (mut v3, _) = RawClient::connect_ok(broker.addr, connect).await;
    v5.ping().await;
    v3.ping().await;

    for handle in broker.instance.connections(&Origin::Region) {
        handle.disconnect(ReasonCode::USE_ANOTHER_SERVER);
    }
    let packets = v5.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
    assert!(v3.expect_closed().await.is_empty());
    let instance = &broker.instance;
    wait_until("both connections are gone", || {
        instance.connected_count() == 0
    })
    .await;
}

#[tokio::test]
async fn v311_keep_alive_expiry_closes() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "sleepy-3", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(client.expect_closed().await.is_empty());
}

#[tokio::test]
async fn v5_keep_alive_expiry_sends_disconnect() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "sleepy-5", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::KEEP_ALIVE_TIMEOUT);
}

#[tokio::test]
async fn pings_keep_connection_alive() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V3_1_1, "awake", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    // Three pings 0.7 s apart span 2.1 s, longer than the 1.5 s limit.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        client.ping().await;
    }
}

#[tokio::test]
async fn v5_keep_alive_above_maximum_is_capped() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_keep_alive = 1;
    let broker = TestBroker::start_with(settings, Arc::new(common::AllowAll)).await;
    let mut connect = connect_packet(ProtocolVersion::V5, "capped", true);
    connect.keep_alive = 300;
    let (mut client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert_eq!(connack.properties.server_keep_alive, Some(1));
    let packets = client.expect_closed().await;
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{packets:?}"
    );
}

#[tokio::test]
async fn shutdown_disconnects_with_server_shutting_down() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "bye", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.ping().await;

    let instance = Arc::clone(&broker.instance);
    let shutdown = tokio::spawn(async move { instance.shutdown().await });
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::SERVER_SHUTTING_DOWN);
    tokio::time::timeout(common::WAIT, shutdown)
        .await
        .expect("shutdown finished")
        .expect("join");
    assert_eq!(broker.instance.connected_count(), 0);
}
