//! Normal flows with a real client library, rumqttc, in MQTT 3.1.1 and 5.0.

mod common;

use std::time::Duration;

use common::{TestBroker, WAIT};
use rumqttc::v5::mqttbytes::v5::Packet as PacketV5;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};
use switchyard_codec::{ProtocolVersion, QoS as CodecQoS};

fn options_v4(client_id: &str, broker: &TestBroker) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    options
}

fn options_v5(client_id: &str, broker: &TestBroker) -> rumqttc::v5::MqttOptions {
    let mut options = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(10));
    options
}

/// Polls a 3.1.1 event loop until `pick` accepts an incoming packet, failing after [`WAIT`].
async fn wait_for_v4<T>(
    eventloop: &mut EventLoop,
    mut pick: impl FnMut(Incoming) -> Option<T>,
) -> T {
    let poll = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = pick(packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => panic!("3.1.1 client failed: {error}"),
            }
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .expect("expected packet within 5 s")
}

async fn wait_for_v5<T>(
    eventloop: &mut rumqttc::v5::EventLoop,
    mut pick: impl FnMut(PacketV5) -> Option<T>,
) -> T {
    let poll = async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(packet)) => {
                    if let Some(found) = pick(packet) {
                        return found;
                    }
                }
                Ok(rumqttc::v5::Event::Outgoing(_)) => {}
                Err(error) => panic!("5.0 client failed: {error}"),
            }
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .expect("expected packet within 5 s")
}

/// Drives an event loop in the background so its client's requests go out.
fn drive_v4(mut eventloop: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}

fn drive_v5(mut eventloop: rumqttc::v5::EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} })
}

#[tokio::test]
async fn v311_publish_reaches_wildcard_subscriber_at_each_qos() {
    let broker = TestBroker::start().await;
    let (subscriber, mut sub_loop) = AsyncClient::new(options_v4("sub-v4", &broker), 10);
    subscriber
        .subscribe("sensors/+/temp", QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    wait_for_v4(&mut sub_loop, |packet| {
        matches!(packet, Incoming::SubAck(_)).then_some(())
    })
    .await;

    let (publisher, pub_loop) = AsyncClient::new(options_v4("pub-v4", &broker), 10);
    let driver = drive_v4(pub_loop);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish("sensors/room1/temp", qos, false, vec![qos as u8])
            .await
            .expect("publish");
        let publish = wait_for_v4(&mut sub_loop, |packet| match packet {
            Incoming::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        assert_eq!(publish.topic, "sensors/room1/temp");
        assert_eq!(publish.qos, qos);
        assert_eq!(&publish.payload[..], &[qos as u8]);
    }
    driver.abort();
}

#[tokio::test]
async fn v311_persistent_session_receives_queued_messages() {
    let broker = TestBroker::start().await;
    let mut options = options_v4("persistent-v4", &broker);
    options.set_clean_session(false);
    let (subscriber, mut sub_loop) = AsyncClient::new(options.clone(), 10);
    subscriber
        .subscribe("queue/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    wait_for_v4(&mut sub_loop, |packet| {
        matches!(packet, Incoming::SubAck(_)).then_some(())
    })
    .await;
    subscriber.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(WAIT, async { while sub_loop.poll().await.is_ok() {} }).await;
    drop(sub_loop);
    let instance = &broker.instance;
    common::wait_until("the subscriber is offline", || {
        !instance.is_connected("persistent-v4")
    })
    .await;

    // A raw publisher waits for each PUBACK, so both messages are queued before the
    // subscriber returns.
    let connect = common::connect_packet(ProtocolVersion::V3_1_1, "pub-v4", true);
    let (mut publisher, _) = common::RawClient::connect_ok(broker.addr, connect).await;
    publisher
        .publish("queue/a", CodecQoS::AtLeastOnce, 1, b"first")
        .await;
    publisher
        .publish("queue/b", CodecQoS::AtLeastOnce, 2, b"second")
        .await;

    let (_subscriber, mut sub_loop) = AsyncClient::new(options, 10);
    let session_present = wait_for_v4(&mut sub_loop, |packet| match packet {
        Incoming::ConnAck(connack) => Some(connack.session_present),
        _ => None,
    })
    .await;
    assert!(session_present);
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let publish = wait_for_v4(&mut sub_loop, |packet| match packet {
            Incoming::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        payloads.push(String::from_utf8_lossy(&publish.payload).into_owned());
    }
    assert_eq!(payloads, ["first", "second"]);
}

#[tokio::test]
async fn v5_publish_reaches_subscriber_at_each_qos() {
    use rumqttc::v5::mqttbytes::QoS as QoSV5;

    let broker = TestBroker::start().await;
    let (subscriber, mut sub_loop) =
        rumqttc::v5::AsyncClient::new(options_v5("sub-v5", &broker), 10);
    subscriber
        .subscribe("devices/#", QoSV5::ExactlyOnce)
        .await
        .expect("subscribe");
    wait_for_v5(&mut sub_loop, |packet| {
        matches!(packet, PacketV5::SubAck(_)).then_some(())
    })
    .await;

    let (publisher, pub_loop) = rumqttc::v5::AsyncClient::new(options_v5("pub-v5", &broker), 10);
    let driver = drive_v5(pub_loop);
    for qos in [QoSV5::AtMostOnce, QoSV5::AtLeastOnce, QoSV5::ExactlyOnce] {
        publisher
            .publish("devices/d1/state", qos, false, vec![qos as u8])
            .await
            .expect("publish");
        let publish = wait_for_v5(&mut sub_loop, |packet| match packet {
            PacketV5::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        assert_eq!(&publish.topic[..], b"devices/d1/state");
        assert_eq!(publish.qos, qos);
        assert_eq!(&publish.payload[..], &[qos as u8]);
    }
    driver.abort();
}

#[tokio::test]
async fn v5_connack_reports_session_present_after_resume() {
    let broker = TestBroker::start().await;
    let mut options = options_v5("resume-v5", &broker);
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(60));

    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options.clone(), 10);
    let first = wait_for_v5(&mut eventloop, |packet| match packet {
        PacketV5::ConnAck(connack) => Some(connack),
        _ => None,
    })
    .await;
    assert!(!first.session_present);
    let properties = first.properties.expect("CONNACK properties");
    assert_eq!(properties.retain_available, Some(1));
    client.disconnect().await.expect("disconnect");
    let _ = tokio::time::timeout(WAIT, async { while eventloop.poll().await.is_ok() {} }).await;
    drop(eventloop);
    let instance = &broker.instance;
    common::wait_until("the client is offline", || {
        !instance.is_connected("resume-v5")
    })
    .await;

    let (_client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let second = wait_for_v5(&mut eventloop, |packet| match packet {
        PacketV5::ConnAck(connack) => Some(connack),
        _ => None,
    })
    .await;
    assert!(second.session_present);
}
