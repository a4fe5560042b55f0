//! `switchyard serve` at the message store's `max_instance_bytes`: a QoS 1 PUBLISH that would
//! take the instance past it gets PUBACK 0x97, and only the acknowledged messages survive a
//! restart.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use switchyard_codec::{
    Ack, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions,
};
use switchyard_transport::testing::MqttClient;
use tokio::net::TcpStream;

const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");
const START_TIMEOUT: Duration = Duration::from_secs(60);
const INSTANCE: &str = "mqtt-cn-limit";
const SUBSCRIBER: &str = "GID_t@@@subscriber";
/// Payload bytes of each message; eight of them are over the 4 KiB the instance may store.
const PAYLOAD_BYTES: usize = 500;
/// More messages than fit, so the limit is reached within the test.
const MAX_MESSAGES: u16 = 20;

/// Renders a configuration with one open instance whose message store records may take at
/// most 4096 bytes.
fn config(data_dir: &Path) -> String {
    let data_dir = data_dir.display();
    format!(
        r#"
data_dir = "{data_dir}"

[api]
listen = "127.0.0.1:0"

[store]
max_instance_bytes = 4096

[[accounts]]
id = "1000000000000001"

[[instances]]
id = "{INSTANCE}"
account = "1000000000000001"
region = "cn-hangzhou"
edition = "platinum"
allow_anonymous = true
require_registered_group_ids = false
require_registered_parent_topics = false
max_packet_size = 1024
listeners = [{{ protocol = "tcp", listen = "127.0.0.1:0" }}]
"#
    )
}

/// A running `switchyard serve` with the address of its instance's TCP listener. Dropping it
/// kills the process.
struct Server {
    child: Child,
    listener: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(dir: &Path) -> Server {
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, config(&dir.join("data"))).expect("write configuration");
        let mut child = Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start switchyard");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });

        let mut listener = None;
        loop {
            let line = received
                .recv_timeout(START_TIMEOUT)
                .expect("switchyard printed 'ready' in time");
            if line == "ready" {
                break;
            }
            let prefix = format!("endpoint kind=instance owner={INSTANCE} protocol=tcp addr=");
            if let Some(addr) = line.strip_prefix(&prefix) {
                let addr = addr.split_whitespace().next().expect("address");
                listener = Some(addr.parse().expect("endpoint address"));
            }
        }
        Server {
            child,
            listener: listener.expect("the instance's tcp endpoint was printed"),
        }
    }

    async fn connect(&self, client_id: &str, persistent: bool) -> MqttClient<TcpStream> {
        let stream = TcpStream::connect(self.listener).await.expect("connect");
        let mut client = MqttClient::new(stream, ProtocolVersion::V5);
        let session_expiry_interval = persistent.then_some(3600);
        let connect = Connect {
            protocol: ProtocolVersion::V5,
            clean_start: !persistent,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties {
                session_expiry_interval,
                ..Properties::default()
            },
        };
        let connack = client.connect(connect).await;
        assert_eq!(connack.reason, ReasonCode::SUCCESS, "{client_id}");
        client
    }
}

fn publish(packet_id: u16) -> Packet {
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    payload[..2].copy_from_slice(&packet_id.to_be_bytes());
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t/limit".into(),
        packet_id: Some(packet_id),
        properties: Properties::default(),
        payload: payload.into(),
    })
}

#[tokio::test]
async fn publish_past_instance_bytes_gets_0x97() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path());

    // A persistent session that is offline, so every message is queued in the store.
    let mut subscriber = server.connect(SUBSCRIBER, true).await;
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: "t/#".into(),
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        }],
        properties: Properties::default(),
    };
    subscriber.send(&[Packet::Subscribe(subscribe)]).await;
    assert!(matches!(
        subscriber.receive().await,
        Some(Packet::SubAck(_))
    ));
    subscriber
        .send(&[Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))])
        .await;
    assert_eq!(subscriber.receive().await, None);

    let mut publisher = server.connect("GID_t@@@publisher", false).await;
    let mut accepted = Vec::new();
    let mut rejected = None;
    for packet_id in 1..=MAX_MESSAGES {
        publisher.send(&[publish(packet_id)]).await;
        let Some(Packet::PubAck(ack)) = publisher.receive().await else {
            panic!("expected PUBACK for packet id {packet_id}");
        };
        assert_eq!(ack.packet_id, packet_id);
        if ack.reason == ReasonCode::SUCCESS {
            accepted.push(packet_id);
            continue;
        }
        rejected = Some(ack.reason);
        break;
    }
    assert_eq!(rejected, Some(ReasonCode::QUOTA_EXCEEDED), "{accepted:?}");
    assert!(!accepted.is_empty(), "the first messages fit");
    publisher.send(&[Packet::PingReq]).await;
    assert_eq!(
        publisher.receive().await,
        Some(Packet::PingResp),
        "the publisher stays connected"
    );
    drop(publisher);
    drop(server);

    // After a restart the session has exactly the acknowledged messages.
    let server = Server::start(dir.path());
    let mut subscriber = server.connect(SUBSCRIBER, true).await;
    let mut received = Vec::new();
    for _ in &accepted {
        let Some(Packet::Publish(publish)) = subscriber.receive().await else {
            panic!("expected the queued PUBLISH after {received:?}");
        };
        received.push(u16::from_be_bytes([publish.payload[0], publish.payload[1]]));
        let packet_id = publish.packet_id.expect("QoS 1 has a packet id");
        subscriber
            .send(&[Packet::PubAck(Ack::new(packet_id))])
            .await;
    }
    assert_eq!(received, accepted);
    subscriber.send(&[Packet::PingReq]).await;
    assert_eq!(
        subscriber.receive().await,
        Some(Packet::PingResp),
        "nothing else was queued"
    );
}
