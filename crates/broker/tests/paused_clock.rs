//! Timers over long intervals (keep-alive, session expiry) on tokio's paused clock, with the
//! connection handed to the instance over an in-memory stream instead of a socket.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{AllowAll, connect_packet, wait_until};
use switchyard_broker::{Instance, InstanceSettings, Origin};
use switchyard_codec::{Packet, ProtocolVersion, ReasonCode, decode_packet};
use tokio::io::{AsyncReadExt, DuplexStream};

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50000))
}

/// Hands a connection with `connect` to `instance` and returns the client's end of it.
fn attach(instance: &Arc<Instance>, connect: switchyard_codec::Connect) -> DuplexStream {
    let (client, server) = tokio::io::duplex(64 * 1024);
    instance.accept_connection(server, peer(), connect, BytesMut::new(), Origin::Region);
    client
}

/// Reads packets from the client's end until the server closes it.
async fn read_until_closed(client: &mut DuplexStream, version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    loop {
        while let Some(packet) = decode_packet(&mut buf, version, u32::MAX).expect("valid packet") {
            packets.push(packet);
        }
        if client.read_buf(&mut buf).await.expect("read") == 0 {
            return packets;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn minute_keep_alive_expires_at_90s() {
    let instance = Instance::new(InstanceSettings::new("mqtt-test"), Arc::new(AllowAll));
    let mut connect = connect_packet(ProtocolVersion::V5, "minute", true);
    connect.keep_alive = 60;
    let mut client = attach(&instance, connect);
    let started = tokio::time::Instant::now();

    let packets = read_until_closed(&mut client, ProtocolVersion::V5).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(_))),
        "{packets:?}"
    );
    let last = packets.last();
    assert!(
        matches!(last, Some(Packet::Disconnect(d)) if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{packets:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(90),
        "closed after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(91),
        "closed after {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn offline_session_expires_after_an_hour() {
    let instance = Instance::new(InstanceSettings::new("mqtt-test"), Arc::new(AllowAll));
    let mut connect = connect_packet(ProtocolVersion::V5, "hourly", false);
    connect.properties.session_expiry_interval = Some(3600);
    let client = attach(&instance, connect);
    wait_until("the client is connected", || {
        instance.is_connected("hourly")
    })
    .await;
    drop(client);
    wait_until("the client is offline", || !instance.is_connected("hourly")).await;

    tokio::time::sleep(Duration::from_secs(3599)).await;
    assert_eq!(instance.session_count(), 1, "session expired early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_until("the session expires", || instance.session_count() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn v311_persistent_session_expires_after_maximum() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_session_expiry = 600;
    let instance = Instance::new(settings, Arc::new(AllowAll));
    let client = attach(
        &instance,
        connect_packet(ProtocolVersion::V3_1_1, "old-style", false),
    );
    wait_until("the client is connected", || {
        instance.is_connected("old-style")
    })
    .await;
    drop(client);
    wait_until("the client is offline", || {
        !instance.is_connected("old-style")
    })
    .await;

    tokio::time::sleep(Duration::from_secs(599)).await;
    assert_eq!(instance.session_count(), 1, "session expired early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_until("the session expires", || instance.session_count() == 0).await;
}
