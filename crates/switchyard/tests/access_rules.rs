//! Topic access rules from the configuration file, end to end: `switchyard serve` with rules on
//! an instance, and raw MQTT 3.1.1 and 5.0 clients on its own listener and on the global
//! endpoint that check the exact SUBACK and PUBACK codes.

use std::net::SocketAddr;

use bytes::Bytes;
use switchyard_codec::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};
use switchyard_transport::testing::MqttClient;
use tokio::net::TcpStream;

mod common;

use common::Server;

/// Renders the configuration of an open instance (anonymous logins, no registration checks)
/// whose rules deny one filter to subscribers with the default code, deny a tree with 0x80,
/// make a tree read-only, and give each client its own `devices/<client id>/...` tree.
fn config(data_dir: &std::path::Path) -> String {
    let data_dir = data_dir.display();
    format!(
        r#"
data_dir = "{data_dir}"

[api]
listen = "127.0.0.1:0"

[[accounts]]
id = "1000000000000001"
access_keys = [{{ id = "LTAIrules", secret = "rules-secret" }}]

[[instances]]
id = "mqtt-cn-rules"
account = "1000000000000001"
region = "cn-hangzhou"
edition = "platinum"
disaster_recovery = true
allow_anonymous = true
require_registered_group_ids = false
require_registered_parent_topics = false
listeners = [{{ protocol = "tcp", listen = "127.0.0.1:0" }}]

[[instances.access_rules]]
effect = "DENY"
permit_action = "SUB"
topic = "test/nosubscribe"

[[instances.access_rules]]
effect = "DENY"
permit_action = "SUB"
topic = "withheld/#"
reason_code = "unspecified_error"

[[instances.access_rules]]
effect = "DENY"
permit_action = "PUB"
topic = "readonly/#"

[[instances.access_rules]]
effect = "ALLOW"
permit_action = "PUB_SUB"
topic = "devices/%c/#"

[[instances.access_rules]]
effect = "DENY"
permit_action = "PUB_SUB"
topic = "devices/#"

[[instances]]
id = "mqtt-cn-rules2"
account = "1000000000000001"
region = "cn-shanghai"
edition = "platinum"
disaster_recovery = true
allow_anonymous = true
require_registered_group_ids = false
require_registered_parent_topics = false

[[disaster_recovery_groups]]
id = "global"
instances = ["mqtt-cn-rules", "mqtt-cn-rules2"]
listeners = [{{ protocol = "tcp", listen = "127.0.0.1:0" }}]
"#
    )
}

/// Returns the instance's own listener and the global endpoint, which sends anonymous devices to
/// the first member, the instance with the rules.
fn listeners(server: &Server) -> [SocketAddr; 2] {
    [
        server.endpoint("instance", "mqtt-cn-rules", "tcp"),
        server.endpoint("global", "global", "tcp"),
    ]
}

async fn connected(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Client {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to switchyard");
    let mut client = MqttClient::new(stream, version);
    let connack = client
        .connect(Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })
        .await;
    assert_eq!(connack.reason, ReasonCode::SUCCESS, "{connack:?}");
    client
}

type Client = MqttClient<TcpStream>;

/// Subscribes to `filters` at QoS 1 in one SUBSCRIBE and returns the SUBACK's codes.
async fn subscribe(client: &mut Client, filters: &[&str]) -> Vec<u8> {
    let subscriptions = filters
        .iter()
        .map(|filter| Subscription {
            filter: (*filter).into(),
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        })
        .collect();
    client
        .send(&[Packet::Subscribe(Subscribe {
            packet_id: 7,
            subscriptions,
            properties: Properties::default(),
        })])
        .await;
    match client.receive().await {
        Some(Packet::SubAck(suback)) => {
            assert_eq!(suback.packet_id, 7);
            suback.reasons.iter().map(|reason| reason.0).collect()
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn publish_qos1(topic: &str, packet_id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(packet_id),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

/// Publishes at QoS 1 and returns the PUBACK's reason code.
async fn publish(client: &mut Client, topic: &str, packet_id: u16) -> u8 {
    client.send(&[publish_qos1(topic, packet_id)]).await;
    match client.receive().await {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id, packet_id);
            ack.reason.0
        }
        other => panic!("expected PUBACK for {topic}, got {other:?}"),
    }
}

#[tokio::test]
async fn denied_filters_get_suback_0x80_in_311() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    for addr in listeners(&server) {
        let mut client = connected(addr, ProtocolVersion::V3_1_1, "sub311").await;
        let filters = [
            "test/nosubscribe",
            "test/#",
            "+/nosubscribe",
            "withheld/a",
            "test/other",
            "$SYS/#",
        ];
        let codes = subscribe(&mut client, &filters).await;
        assert_eq!(codes, [0x80, 0x80, 0x80, 0x80, 0x01, 0x01], "{addr}");
    }
}

#[tokio::test]
async fn denied_filters_get_rule_codes_in_v5() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    for addr in listeners(&server) {
        let mut client = connected(addr, ProtocolVersion::V5, "sub5").await;
        let filters = [
            "test/nosubscribe",
            "test/+",
            "#",
            "$share/workers/test/#",
            "withheld/a/b",
            "test/nosubscribe/below",
            "$SYS/#",
        ];
        let codes = subscribe(&mut client, &filters).await;
        assert_eq!(codes, [0x87, 0x87, 0x87, 0x87, 0x80, 0x01, 0x01], "{addr}");
    }
}

#[tokio::test]
async fn placeholder_rules_give_each_client_its_tree() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    for addr in listeners(&server) {
        let mut client = connected(addr, ProtocolVersion::V5, "dev1").await;
        // Publish first, so the client's own subscription does not send the messages back.
        assert_eq!(publish(&mut client, "devices/dev1/state", 1).await, 0x00);
        assert_eq!(publish(&mut client, "devices/dev2/state", 2).await, 0x87);
        let filters = ["devices/dev1/#", "devices/dev2/#", "devices/+/state"];
        let codes = subscribe(&mut client, &filters).await;
        assert_eq!(codes, [0x01, 0x87, 0x87], "{addr}");
    }
}

#[tokio::test]
async fn denied_publish_gets_puback_0x87_in_v5() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    for addr in listeners(&server) {
        let mut client = connected(addr, ProtocolVersion::V5, "pub5").await;
        assert_eq!(publish(&mut client, "readonly/x", 1).await, 0x87, "{addr}");
        assert_eq!(publish(&mut client, "open/x", 2).await, 0x00, "{addr}");
        // A SUB rule does not limit publishing.
        assert_eq!(publish(&mut client, "test/nosubscribe", 3).await, 0x00);
    }
}

#[tokio::test]
async fn denied_publish_closes_311_connection() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    for addr in listeners(&server) {
        let mut client = connected(addr, ProtocolVersion::V3_1_1, "pub311").await;
        assert_eq!(publish(&mut client, "open/x", 1).await, 0x00, "{addr}");
        client.send(&[publish_qos1("readonly/x", 2)]).await;
        assert_eq!(client.receive().await, None, "{addr}");
    }
}

#[tokio::test]
async fn placeholder_sees_assigned_client_id() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(dir.path(), &config(dir.path()));
    let addr = server.endpoint("instance", "mqtt-cn-rules", "tcp");
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to switchyard");
    let mut client = MqttClient::new(stream, ProtocolVersion::V5);
    let connack = client
        .connect(Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: "".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })
        .await;
    let assigned = connack
        .properties
        .assigned_client_identifier
        .expect("an assigned client id");
    let own = format!("devices/{}/state", assigned.as_str());
    assert_eq!(publish(&mut client, &own, 1).await, 0x00, "{own}");
    assert_eq!(publish(&mut client, "devices/other/state", 2).await, 0x87);
}
