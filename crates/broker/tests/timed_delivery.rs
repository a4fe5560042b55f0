//! Timers that decide whether and when a message is delivered (will delays, message expiry in
//! queues and in the retained store), on tokio's paused clock with connections handed to the
//! instance over in-memory streams.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{AllowAll, connect_packet, publish_packet, subscribe_packet, wait_until};
use switchyard_broker::{Instance, InstanceSettings, Origin};
use switchyard_codec::{
    Ack, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Will,
    decode_packet, encode_packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A 5.0 client on an in-memory stream.
struct Client {
    stream: DuplexStream,
    buf: BytesMut,
}

impl Client {
    /// Hands a connection with `connect` to `instance` and reads its CONNACK.
    async fn connect(instance: &Arc<Instance>, connect: Connect) -> Client {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
        instance.accept_connection(server, peer, connect, BytesMut::new(), Origin::Region);
        let mut client = Client {
            stream: client,
            buf: BytesMut::new(),
        };
        let connack = client.recv().await;
        assert!(
            matches!(&connack, Some(Packet::ConnAck(c)) if c.reason == ReasonCode::SUCCESS),
            "{connack:?}"
        );
        client
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode_packet(packet, V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Reads the next packet, or `None` once the server closed the stream.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = decode_packet(&mut self.buf, V5, u32::MAX).expect("valid packet")
            {
                return Some(packet);
            }
            if self.stream.read_buf(&mut self.buf).await.expect("read") == 0 {
                return None;
            }
        }
    }

    /// Reads the next packet if one arrives within `wait` of the paused clock.
    async fn try_recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, self.recv()).await.ok().flatten()
    }

    async fn subscribe(&mut self, filter: &str) {
        self.send(&subscribe_packet(1, &[(filter, QoS::AtLeastOnce)]))
            .await;
        let suback = self.recv().await;
        assert!(matches!(suback, Some(Packet::SubAck(_))), "{suback:?}");
    }

    async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

fn instance() -> Arc<Instance> {
    Instance::new(InstanceSettings::new("mqtt-test"), Arc::new(AllowAll))
}

/// A CONNECT with a will on `status/<client_id>` delayed by `delay` seconds and a session that
/// lasts `session_expiry` seconds offline.
fn connect_with_delayed_will(client_id: &str, delay: u32, session_expiry: u32) -> Connect {
    let mut connect = connect_packet(V5, client_id, false);
    connect.properties.session_expiry_interval = Some(session_expiry);
    connect.will = Some(Will {
        topic: format!("status/{client_id}").as_str().into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        },
    });
    connect
}

async fn watcher(instance: &Arc<Instance>) -> Client {
    let mut watcher = Client::connect(instance, connect_packet(V5, "watcher", true)).await;
    watcher.subscribe("status/#").await;
    watcher
}

#[tokio::test(start_paused = true)]
async fn will_waits_for_its_delay() {
    let instance = instance();
    let mut watcher = watcher(&instance).await;
    let client = Client::connect(&instance, connect_with_delayed_will("slow", 30, 3600)).await;
    let started = tokio::time::Instant::now();
    drop(client);

    let publish = watcher.recv_publish().await;
    assert_eq!(publish.topic.as_str(), "status/slow");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(30), "after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(31), "after {elapsed:?}");
    assert_eq!(instance.session_count(), 2, "the session outlives its will");
}

#[tokio::test(start_paused = true)]
async fn reconnect_within_delay_cancels_will() {
    let instance = instance();
    let mut watcher = watcher(&instance).await;
    let connect = connect_with_delayed_will("flaky", 30, 3600);
    let client = Client::connect(&instance, connect.clone()).await;
    drop(client);
    wait_until("the client is offline", || !instance.is_connected("flaky")).await;

    tokio::time::sleep(Duration::from_secs(20)).await;
    let _back = Client::connect(&instance, connect).await;
    let packet = watcher.try_recv(Duration::from_secs(60)).await;
    assert!(packet.is_none(), "unexpected {packet:?}");
}

#[tokio::test(start_paused = true)]
async fn session_expiry_before_delay_publishes_will() {
    let instance = instance();
    let mut watcher = watcher(&instance).await;
    let client = Client::connect(&instance, connect_with_delayed_will("brief", 300, 10)).await;
    let started = tokio::time::Instant::now();
    drop(client);

    let publish = watcher.recv_publish().await;
    assert_eq!(publish.topic.as_str(), "status/brief");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(10), "after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(11), "after {elapsed:?}");
    wait_until("the session ends", || instance.session_count() == 1).await;
}

/// Builds a QoS 1 PUBLISH on `topic` with the given Message Expiry Interval.
fn expiring_publish(topic: &str, packet_id: u16, expiry: u32, retain: bool) -> Packet {
    let mut publish = publish_packet(topic, QoS::AtLeastOnce, Some(packet_id), b"reading");
    publish.retain = retain;
    publish.properties.message_expiry_interval = Some(expiry);
    Packet::Publish(publish)
}

#[tokio::test(start_paused = true)]
async fn offline_queue_drops_expired_messages() {
    let instance = instance();
    let mut subscriber_connect = connect_packet(V5, "away", false);
    subscriber_connect.properties.session_expiry_interval = Some(3600);
    let mut subscriber = Client::connect(&instance, subscriber_connect.clone()).await;
    subscriber.subscribe("readings/#").await;
    drop(subscriber);
    wait_until("the subscriber is offline", || {
        !instance.is_connected("away")
    })
    .await;

    let mut publisher = Client::connect(&instance, connect_packet(V5, "sensor", true)).await;
    publisher
        .send(&expiring_publish("readings/short", 1, 10, false))
        .await;
    publisher
        .send(&expiring_publish("readings/long", 2, 100, false))
        .await;
    for _ in 0..2 {
        let ack = publisher.recv().await;
        assert!(matches!(ack, Some(Packet::PubAck(_))), "{ack:?}");
    }

    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut subscriber = Client::connect(&instance, subscriber_connect).await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.topic.as_str(), "readings/long");
    let remaining = publish.properties.message_expiry_interval;
    assert_eq!(remaining, Some(70), "the interval counts down while queued");
    let packet_id = publish.packet_id.unwrap_or_default();
    subscriber.send(&Packet::PubAck(Ack::new(packet_id))).await;
    let packet = subscriber.try_recv(Duration::from_secs(1)).await;
    assert!(packet.is_none(), "expired message delivered: {packet:?}");
}

#[tokio::test(start_paused = true)]
async fn retained_message_expires() {
    let instance = instance();
    let mut publisher = Client::connect(&instance, connect_packet(V5, "sensor", true)).await;
    publisher
        .send(&expiring_publish("rooms/kitchen", 1, 60, true))
        .await;
    let ack = publisher.recv().await;
    assert!(matches!(ack, Some(Packet::PubAck(_))), "{ack:?}");

    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut early = Client::connect(&instance, connect_packet(V5, "early", true)).await;
    early.subscribe("rooms/+").await;
    let publish = early.recv_publish().await;
    assert!(publish.retain);
    assert_eq!(publish.properties.message_expiry_interval, Some(40));

    tokio::time::sleep(Duration::from_secs(41)).await;
    let mut late = Client::connect(&instance, connect_packet(V5, "late", true)).await;
    late.subscribe("rooms/+").await;
    let packet = late.try_recv(Duration::from_secs(1)).await;
    assert!(
        packet.is_none(),
        "expired retained message delivered: {packet:?}"
    );
    assert_eq!(instance.retained_count(), 0);
}
