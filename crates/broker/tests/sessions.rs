//! Sessions across connections: takeover, clean and persistent sessions, offline queues and
//! session expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AllowAll, RawClient, TestBroker, connect_packet, wait_until};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Ack, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test]
async fn v5_takeover_disconnects_old_connection_with_0x8e() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "twin", true);
    let (mut old, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    old.ping().await;

    let (mut new, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(!connack.session_present);
    let packets = old.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER);
    new.ping().await;
    assert!(broker.instance.is_connected("twin"));
    let instance = &broker.instance;
    wait_until("the old connection is gone", || {
        instance.connected_count() == 1
    })
    .await;
}

#[tokio::test]
async fn v311_takeover_keeps_persistent_session() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "keeper", false);
    let (mut old, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    old.subscribe(1, &[("t/keep", QoS::AtLeastOnce)]).await;

    let (mut new, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(connack.session_present);
    assert!(old.expect_closed().await.is_empty());

    // The subscription came along with the session.
    let (mut publisher, _) = RawClient::connect_ok(
        broker.addr,
        connect_packet(ProtocolVersion::V3_1_1, "p", true),
    )
    .await;
    publisher
        .publish("t/keep", QoS::AtLeastOnce, 1, b"still here")
        .await;
    assert_eq!(&new.recv_publish().await.payload[..], b"still here");
}

#[tokio::test]
async fn clean_start_discards_old_session() {
    let broker = TestBroker::start().await;
    let persistent = connect_packet(ProtocolVersion::V3_1_1, "forgetful", false);
    let (mut client, _) = RawClient::connect_ok(broker.addr, persistent.clone()).await;
    client.subscribe(1, &[("t/forget", QoS::AtLeastOnce)]).await;
    drop(client);
    let instance = &broker.instance;
    wait_until("the client is offline", || {
        !instance.is_connected("forgetful")
    })
    .await;

    let clean = connect_packet(ProtocolVersion::V3_1_1, "forgetful", true);
    let (mut client, connack) = RawClient::connect_ok(broker.addr, clean).await;
    assert!(!connack.session_present);
    let (mut publisher, _) = RawClient::connect_ok(
        broker.addr,
        connect_packet(ProtocolVersion::V3_1_1, "p", true),
    )
    .await;
    publisher
        .publish("t/forget", QoS::AtLeastOnce, 1, b"x")
        .await;
    assert!(client.try_recv(QUIET).await.is_none());
    assert_eq!(broker.instance.subscription_count(), 0);
}

#[tokio::test]
async fn clean_session_ends_with_connection() {
    let broker = TestBroker::start().await;
    let clean = connect_packet(ProtocolVersion::V3_1_1, "brief", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, clean.clone()).await;
    client.subscribe(1, &[("t/brief", QoS::AtLeastOnce)]).await;
    client
        .send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await;
    assert!(client.expect_closed().await.is_empty());
    let instance = &broker.instance;
    wait_until("the session is removed", || instance.session_count() == 0).await;
    assert_eq!(broker.instance.subscription_count(), 0);

    let mut persistent = clean;
    persistent.clean_start = false;
    let (_client, connack) = RawClient::connect_ok(broker.addr, persistent).await;
    assert!(!connack.session_present);
}

#[tokio::test]
async fn offline_session_queues_reliable_messages() {
    let broker = TestBroker::start().await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut connect = connect_packet(version, "offline", false);
        connect.properties.session_expiry_interval = version.is_v5().then_some(300);
        let (mut sub, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
        sub.subscribe(1, &[("t/offline/#", QoS::ExactlyOnce)]).await;
        sub.send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await;
        assert!(sub.expect_closed().await.is_empty());
        let instance = &broker.instance;
        wait_until("the subscriber is offline", || {
            !instance.is_connected("offline")
        })
        .await;

        let (mut publisher, _) =
            RawClient::connect_ok(broker.addr, connect_packet(version, "p", true)).await;
        publisher
            .publish("t/offline/a", QoS::AtLeastOnce, 1, b"1")
            .await;
        publisher
            .publish("t/offline/b", QoS::AtMostOnce, 2, b"dropped")
            .await;
        publisher
            .publish("t/offline/c", QoS::ExactlyOnce, 3, b"2")
            .await;
        publisher
            .publish("t/offline/d", QoS::AtLeastOnce, 4, b"3")
            .await;

        let (mut sub, connack) = RawClient::connect_ok(broker.addr, connect.clone()).await;
        assert!(connack.session_present, "{version:?}");
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(sub.recv_publish().await);
        }
        let payloads: Vec<&[u8]> = received
            .iter()
            .map(|publish| &publish.payload[..])
            .collect();
        assert_eq!(payloads, [b"1", b"2", b"3"], "{version:?}");
        for publish in &received {
            assert!(!publish.dup, "{version:?}: first delivery has DUP set");
            let id = publish.packet_id.unwrap_or_default();
            if publish.qos == QoS::ExactlyOnce {
                sub.send(&Packet::PubRec(Ack::new(id))).await;
                let release = sub.recv().await;
                assert!(matches!(release, Some(Packet::PubRel(_))), "{release:?}");
                sub.send(&Packet::PubComp(Ack::new(id))).await;
            } else {
                sub.send(&Packet::PubAck(Ack::new(id))).await;
            }
        }
        assert!(
            sub.try_recv(QUIET).await.is_none(),
            "{version:?}: QoS 0 was queued offline"
        );

        let mut clean = connect;
        clean.clean_start = true;
        clean.properties.session_expiry_interval = None;
        let _ = RawClient::connect_ok(broker.addr, clean).await;
    }
}

#[tokio::test]
async fn full_offline_queue_keeps_newest_messages() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_queued_messages = 2;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let connect = connect_packet(ProtocolVersion::V3_1_1, "small-queue", false);
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    sub.subscribe(1, &[("t/q", QoS::AtLeastOnce)]).await;
    drop(sub);
    let instance = &broker.instance;
    wait_until("the subscriber is offline", || {
        !instance.is_connected("small-queue")
    })
    .await;

    let (mut publisher, _) = RawClient::connect_ok(
        broker.addr,
        connect_packet(ProtocolVersion::V3_1_1, "p", true),
    )
    .await;
    for id in 1..=4u16 {
        publisher
            .publish("t/q", QoS::AtLeastOnce, id, &[id as u8])
            .await;
    }

    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect).await;
    assert_eq!(&sub.recv_publish().await.payload[..], &[3]);
    assert_eq!(&sub.recv_publish().await.payload[..], &[4]);
    assert!(sub.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn v5_session_expires_after_interval() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "expiring", false);
    connect.properties.session_expiry_interval = Some(1);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    client.subscribe(1, &[("t/expire", QoS::AtLeastOnce)]).await;
    client
        .send(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await;
    assert!(client.expect_closed().await.is_empty());
    assert_eq!(broker.instance.session_count(), 1);

    let instance = &broker.instance;
    wait_until("the session expires", || instance.session_count() == 0).await;
    assert_eq!(broker.instance.subscription_count(), 0);
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(!connack.session_present);
}

#[tokio::test]
async fn v5_session_within_interval_resumes() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "returning", false);
    connect.properties.session_expiry_interval = Some(60);
    let (client, _) = RawClient::connect_ok(broker.addr, connect.clone()).await;
    drop(client);
    let instance = &broker.instance;
    wait_until("the client is offline", || {
        !instance.is_connected("returning")
    })
    .await;
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert!(connack.session_present);
}

#[tokio::test]
async fn v5_disconnect_can_end_session_at_once() {
    let broker = TestBroker::start().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "quitter", false);
    connect.properties.session_expiry_interval = Some(300);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let mut disconnect = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(0);
    client.send(&Packet::Disconnect(disconnect)).await;
    assert!(client.expect_closed().await.is_empty());
    let instance = &broker.instance;
    wait_until("the session is removed", || instance.session_count() == 0).await;
}

#[tokio::test]
async fn v5_disconnect_cannot_add_expiry_to_zero() {
    let broker = TestBroker::start().await;
    let connect = connect_packet(ProtocolVersion::V5, "sneaky", true);
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let mut disconnect = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(300);
    client.send(&Packet::Disconnect(disconnect)).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(reply)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(reply.reason, ReasonCode::PROTOCOL_ERROR);
    let instance = &broker.instance;
    wait_until("the session is removed", || instance.session_count() == 0).await;
}

#[tokio::test]
async fn v5_requested_expiry_is_capped() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_session_expiry = 10;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let mut connect = connect_packet(ProtocolVersion::V5, "greedy", false);
    connect.properties.session_expiry_interval = Some(u32::MAX);
    let (_client, connack) = RawClient::connect_ok(broker.addr, connect).await;
    assert_eq!(connack.properties.session_expiry_interval, Some(10));
}
