//! Will messages over the wire: when they are published and when not, their properties, and
//! the authorization of the will topic. Will delays over long intervals are in
//! `timed_delivery.rs`, on the paused clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{AllowAll, RawClient, TestBroker, connect_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{
    ByteStr, Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Will,
};

const QUIET: Duration = Duration::from_millis(300);
const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Builds a CONNECT for `client_id` with a QoS 1 will on `status/<client_id>`.
fn connect_with_will(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    let mut connect = connect_packet(version, client_id, clean_start);
    connect.will = Some(Will {
        topic: format!("status/{client_id}").as_str().into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    });
    connect
}

/// Connects a 5.0 client subscribed to `status/#` at QoS 1.
async fn watcher(broker: &TestBroker) -> RawClient {
    let connect = connect_packet(V5, "watcher", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    client.subscribe(1, &[("status/#", QoS::AtLeastOnce)]).await;
    client
}

async fn expect_will(watcher: &mut RawClient, client_id: &str) {
    let publish = watcher.recv_publish().await;
    assert_eq!(publish.topic.as_str(), format!("status/{client_id}"));
    assert_eq!(&publish.payload[..], b"offline");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert!(!publish.retain);
}

async fn expect_no_will(watcher: &mut RawClient) {
    let packet = watcher.try_recv(QUIET).await;
    assert!(packet.is_none(), "unexpected {packet:?}");
}

#[tokio::test]
async fn network_drop_publishes_will() {
    for version in [ProtocolVersion::V3_1, V311, V5] {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (mut client, _) =
            RawClient::connect_ok(broker.addr, connect_with_will(version, "dropper", true)).await;
        client.ping().await;
        drop(client);
        expect_will(&mut watcher, "dropper").await;
    }
}

#[tokio::test]
async fn normal_disconnect_deletes_will() {
    for version in [V311, V5] {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let (mut client, _) =
            RawClient::connect_ok(broker.addr, connect_with_will(version, "polite", true)).await;
        client
            .send(&Packet::Disconnect(Disconnect::new(
                ReasonCode::NORMAL_DISCONNECTION,
            )))
            .await;
        assert!(client.expect_closed().await.is_empty());
        expect_no_will(&mut watcher).await;
    }
}

#[tokio::test]
async fn disconnect_with_will_message_publishes_will() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_with_will(V5, "leaver", true)).await;
    client
        .send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        )))
        .await;
    assert!(client.expect_closed().await.is_empty());
    expect_will(&mut watcher, "leaver").await;
}

#[tokio::test]
async fn keep_alive_expiry_publishes_will() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let mut connect = connect_with_will(V311, "sleeper", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    // 1.5 times the keep-alive of 1 s passes without a packet.
    assert!(client.expect_closed().await.is_empty());
    expect_will(&mut watcher, "sleeper").await;
}

#[tokio::test]
async fn protocol_violation_publishes_will() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let connect = connect_with_will(V5, "rule-breaker", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    let packets = client.expect_closed().await;
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR),
        "{packets:?}"
    );
    expect_will(&mut watcher, "rule-breaker").await;
}

#[tokio::test]
async fn server_disconnect_publishes_will() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_with_will(V5, "moved", true)).await;
    client.ping().await;
    for handle in broker
        .instance
        .connections(&switchyard_broker::Origin::Region)
    {
        if handle.client_id() == "moved" {
            handle.disconnect(ReasonCode::USE_ANOTHER_SERVER);
        }
    }
    let packets = client.expect_closed().await;
    assert!(
        matches!(packets.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::USE_ANOTHER_SERVER),
        "{packets:?}"
    );
    expect_will(&mut watcher, "moved").await;
}

#[tokio::test]
async fn takeover_publishes_will_of_old_connection() {
    // 3.1.1 persistent session, 5.0 resumed session without delay, 5.0 clean start.
    let cases = [
        (V311, false, None),
        (V5, false, Some(0)),
        (V5, true, Some(30)),
    ];
    for (version, clean_start, delay) in cases {
        let broker = TestBroker::start().await;
        let mut watcher = watcher(&broker).await;
        let mut connect = connect_with_will(version, "twin", clean_start);
        connect.properties.session_expiry_interval = version.is_v5().then_some(60);
        if let Some(will) = &mut connect.will {
            will.properties.will_delay_interval = delay;
        }
        let (mut old, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
        old.ping().await;
        let (mut new, _) = RawClient::connect_ok(broker.addr, connect).await;
        expect_will(&mut watcher, "twin").await;
        old.expect_closed().await;
        new.ping().await;
        expect_no_will(&mut watcher).await;
    }
}

#[tokio::test]
async fn resumed_takeover_cancels_delayed_will() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let mut connect = connect_with_will(V5, "patient", false);
    connect.properties.session_expiry_interval = Some(60);
    if let Some(will) = &mut connect.will {
        will.properties.will_delay_interval = Some(30);
    }
    let (mut old, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    old.ping().await;
    let (mut new, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(connack.session_present);
    old.expect_closed().await;
    new.ping().await;
    expect_no_will(&mut watcher).await;
}

#[tokio::test]
async fn delayed_will_is_published_when_session_ends() {
    // Session expiry 0: the session ends with the connection, before the 30 s delay.
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let mut connect = connect_with_will(V5, "short-lived", true);
    if let Some(will) = &mut connect.will {
        will.properties.will_delay_interval = Some(30);
    }
    let (client, _) = RawClient::connect_ok(broker.addr, connect).await;
    drop(client);
    expect_will(&mut watcher, "short-lived").await;
}

#[tokio::test]
async fn will_properties_are_forwarded() {
    let broker = TestBroker::start().await;
    let mut watcher = watcher(&broker).await;
    let mut connect = connect_with_will(V5, "chatty", true);
    let properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        content_type: Some(ByteStr::from("text/plain")),
        response_topic: Some(ByteStr::from("replies/chatty")),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![
            (ByteStr::from("site"), ByteStr::from("hz")),
            (ByteStr::from("site"), ByteStr::from("sh")),
        ],
        ..Properties::default()
    };
    if let Some(will) = &mut connect.will {
        will.properties = properties.clone();
    }
    let (client, _) = RawClient::connect_ok(broker.addr, connect).await;
    drop(client);

    let publish = watcher.recv_publish().await;
    let received = publish.properties;
    assert_eq!(received.payload_format_indicator, Some(1));
    let expiry = received.message_expiry_interval.unwrap_or_default();
    assert!((119..=120).contains(&expiry), "expiry {expiry}");
    assert_eq!(received.content_type, properties.content_type);
    assert_eq!(received.response_topic, properties.response_topic);
    assert_eq!(received.correlation_data, properties.correlation_data);
    assert_eq!(received.user_properties, properties.user_properties);
    assert_eq!(received.will_delay_interval, None);
}

#[tokio::test]
async fn retained_will_becomes_retained_message() {
    let broker = TestBroker::start().await;
    let mut connect = connect_with_will(V311, "lamp", true);
    if let Some(will) = &mut connect.will {
        will.retain = true;
    }
    let (client, _) = RawClient::connect_ok(broker.addr, connect).await;
    drop(client);
    let instance = &broker.instance;
    common::wait_until("the will is retained", || instance.retained_count() == 1).await;

    let (mut late, _) = RawClient::connect_ok(broker.addr, connect_packet(V5, "late", true)).await;
    late.subscribe(1, &[("status/+", QoS::AtLeastOnce)]).await;
    let publish = late.recv_publish().await;
    assert_eq!(publish.topic.as_str(), "status/lamp");
    assert!(publish.retain);
}

#[tokio::test]
async fn unauthorized_will_topic_is_rejected() {
    let settings = InstanceSettings::new("mqtt-test");
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    for version in [V311, V5] {
        let mut connect = connect_with_will(version, "sneaky", true);
        if let Some(will) = &mut connect.will {
            will.topic = ByteStr::from("forbidden/status");
        }
        let (mut client, connack) = RawClient::connect(broker.addr, connect).await;
        // 3.1.1 return code 5 (not authorized) decodes back to 0x87.
        assert_eq!(connack.reason, ReasonCode::NOT_AUTHORIZED, "{version:?}");
        assert!(client.expect_closed().await.is_empty());
    }
    assert_eq!(broker.instance.session_count(), 0);
}
