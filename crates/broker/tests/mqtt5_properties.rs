//! MQTT 5.0 properties over the wire: what passes from publisher to subscriber unchanged,
//! Request Response Information and Request Problem Information, Reason Strings on errors,
//! enhanced authentication, and server redirection.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{AllowAll, RawClient, TestBroker, connect_packet, publish_packet};
use switchyard_broker::{InstanceSettings, Origin};
use switchyard_codec::{Ack, Auth, ByteStr, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn application_properties() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        content_type: Some(ByteStr::from("application/json")),
        response_topic: Some(ByteStr::from("replies/requester")),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
        user_properties: vec![
            (ByteStr::from("b"), ByteStr::from("2")),
            (ByteStr::from("a"), ByteStr::from("1")),
            (ByteStr::from("b"), ByteStr::from("3")),
        ],
        ..Properties::default()
    }
}

#[tokio::test]
async fn application_properties_pass_through_unchanged() {
    let broker = TestBroker::start().await;
    let (mut subscriber, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "responder", true)).await;
    subscriber
        .subscribe(1, &[("requests/#", QoS::AtLeastOnce)])
        .await;
    let (mut old_subscriber, _) = RawClient::connect_ok(
        broker.addr,
        connect_packet(ProtocolVersion::V3_1_1, "legacy", true),
    )
    .await;
    old_subscriber
        .subscribe(1, &[("requests/#", QoS::AtLeastOnce)])
        .await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "requester", true)).await;

    let mut publish = publish_packet("requests/status", QoS::AtLeastOnce, Some(1), b"{}");
    publish.properties = application_properties();
    publisher.send(&Packet::Publish(publish)).await;
    let ack = publisher.recv().await;
    assert!(matches!(ack, Some(Packet::PubAck(_))), "{ack:?}");

    let received = subscriber.recv_publish().await.properties;
    let sent = application_properties();
    assert_eq!(
        received.payload_format_indicator,
        sent.payload_format_indicator
    );
    assert_eq!(received.content_type, sent.content_type);
    assert_eq!(received.response_topic, sent.response_topic);
    assert_eq!(received.correlation_data, sent.correlation_data);
    assert_eq!(received.user_properties, sent.user_properties);
    assert_eq!(received.message_expiry_interval, None);

    // A 3.1.1 subscriber gets the same message without properties.
    let legacy = old_subscriber.recv_publish().await;
    assert_eq!(&legacy.payload[..], b"{}");
}

#[tokio::test]
async fn response_information_follows_request() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.response_topic_prefix = Some("apps".to_owned());
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;

    let mut asking = connect_packet(V5, "GID_app@@@1", true);
    asking.properties.request_response_information = Some(1);
    let (_client, connack) = RawClient::connect_ok(broker.addr, asking).await;
    assert_eq!(
        connack.properties.response_information.as_deref(),
        Some("apps/response/GID_app@@@1")
    );

    let silent = connect_packet(V5, "GID_app@@@2", true);
    let (_client, connack) = RawClient::connect_ok(broker.addr, silent).await;
    assert_eq!(connack.properties.response_information, None);
}

/// Connects a 5.0 client that sets Request Problem Information to `problem_information`, or
/// leaves it out (which means 1) when `None`.
async fn client_with_problem_information(
    broker: &TestBroker,
    id: &str,
    problem_information: Option<u8>,
) -> RawClient {
    let mut connect = connect_packet(V5, id, true);
    connect.properties.request_problem_information = problem_information;
    RawClient::connect_ok(broker.addr, connect).await.0
}

#[tokio::test]
async fn error_acknowledgements_carry_reason_strings() {
    let broker = TestBroker::start().await;
    let mut client = client_with_problem_information(&broker, "curious", None).await;

    let forbidden = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(1), b"x");
    client.send(&Packet::Publish(forbidden)).await;
    let Some(Packet::PubAck(puback)) = client.recv().await else {
        panic!("expected PUBACK");
    };
    assert_eq!(puback.reason, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        puback.properties.reason_string.as_deref(),
        Some("not authorized to publish to forbidden/x")
    );

    client.send(&Packet::PubRel(Ack::new(9))).await;
    let Some(Packet::PubComp(pubcomp)) = client.recv().await else {
        panic!("expected PUBCOMP");
    };
    assert_eq!(pubcomp.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    assert!(pubcomp.properties.reason_string.is_some());

    client
        .send(&common::subscribe_packet(
            2,
            &[("a/#/b", QoS::AtMostOnce), ("ok", QoS::AtMostOnce)],
        ))
        .await;
    let Some(Packet::SubAck(suback)) = client.recv().await else {
        panic!("expected SUBACK");
    };
    assert_eq!(
        suback.reasons,
        [ReasonCode::TOPIC_FILTER_INVALID, ReasonCode::GRANTED_QOS_0]
    );
    let reason = suback.properties.reason_string.unwrap_or_default();
    assert!(reason.contains("\"a/#/b\""), "{reason}");
}

#[tokio::test]
async fn no_problem_information_strips_reason_strings() {
    let broker = TestBroker::start().await;
    let mut client = client_with_problem_information(&broker, "quiet", Some(0)).await;

    let forbidden = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(1), b"x");
    client.send(&Packet::Publish(forbidden)).await;
    let Some(Packet::PubAck(puback)) = client.recv().await else {
        panic!("expected PUBACK");
    };
    assert_eq!(puback.reason, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(puback.properties.reason_string, None);

    client
        .send(&common::subscribe_packet(2, &[("a/#/b", QoS::AtMostOnce)]))
        .await;
    let Some(Packet::SubAck(suback)) = client.recv().await else {
        panic!("expected SUBACK");
    };
    assert_eq!(suback.reasons, [ReasonCode::TOPIC_FILTER_INVALID]);
    assert_eq!(suback.properties.reason_string, None);

    // DISCONNECT may still carry a Reason String.
    client.send(&Packet::PubRec(Ack::new(1))).await;
    client
        .send(&Packet::ConnAck(switchyard_codec::ConnAck {
            session_present: false,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }))
        .await;
    let packets = client.expect_closed().await;
    let Some(Packet::Disconnect(disconnect)) = packets.last() else {
        panic!("expected DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR);
    assert!(disconnect.properties.reason_string.is_some());
}

#[tokio::test]
async fn violation_disconnect_says_why() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "confused", true)).await;
    client.send(&Packet::PingResp).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR);
    assert_eq!(
        disconnect.properties.reason_string.as_deref(),
        Some("PINGRESP is sent only by servers")
    );
}

#[tokio::test]
async fn small_maximum_packet_size_drops_reason_string() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V5, "tiny", true);
    connect.properties.maximum_packet_size = Some(20);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let forbidden = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(1), b"x");
    client.send(&Packet::Publish(forbidden)).await;
    let Some(Packet::PubAck(puback)) = client.recv().await else {
        panic!("expected PUBACK");
    };
    assert_eq!(puback.reason, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(puback.properties.reason_string, None);
}

#[tokio::test]
async fn authentication_method_gets_0x8c() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(V5, "scram", true);
    connect.properties.authentication_method = Some(ByteStr::from("SCRAM-SHA-256"));
    let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
    assert_eq!(connack.reason, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(!connack.session_present);
    assert!(client.expect_closed().await.is_empty());
    assert_eq!(broker.instance.session_count(), 0);
}

#[tokio::test]
async fn auth_without_enhanced_authentication_is_protocol_error() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "auth", true)).await;
    let auth = Auth {
        reason: ReasonCode::RE_AUTHENTICATE,
        properties: Properties {
            authentication_method: Some(ByteStr::from("SCRAM-SHA-256")),
            ..Properties::default()
        },
    };
    client.send(&Packet::Auth(auth)).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR);
}

#[tokio::test]
async fn redirection_sends_server_reference() {
    let cases = [
        (
            ReasonCode::USE_ANOTHER_SERVER,
            Some("mqtt-sh.example.com:1883"),
        ),
        (ReasonCode::SERVER_MOVED, Some("mqtt-bj.example.com")),
        (ReasonCode::USE_ANOTHER_SERVER, None),
    ];
    for (reason, reference) in cases {
        let broker = TestBroker::start().await;
        let (mut client, _) =
            RawClient::connect_ok(broker.addr, connect_packet(V5, "roamer", true)).await;
        client.ping().await;
        for handle in broker.instance.connections(&Origin::Region) {
            handle.disconnect_with_reference(reason, reference.map(str::to_owned));
        }
        let packets = client.expect_closed().await;
        let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
            panic!("expected one DISCONNECT, got {packets:?}");
        };
        assert_eq!(disconnect.reason, reason);
        assert_eq!(disconnect.properties.server_reference.as_deref(), reference);
    }
}

#[tokio::test]
async fn v311_redirection_closes_without_packet() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "old-roamer", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.ping().await;
    for handle in broker.instance.connections(&Origin::Region) {
        handle.disconnect_with_reference(
            ReasonCode::USE_ANOTHER_SERVER,
            Some("elsewhere:1883".to_owned()),
        );
    }
    assert!(client.expect_closed().await.is_empty());
}
