//! Shared helpers for the broker's integration tests: a running instance on 127.0.0.1, test
//! authenticators, and a raw MQTT client that sends and reads exact packets.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_broker::{Access, Authenticator, Identity, Instance, InstanceSettings};
use switchyard_codec::{
    Ack, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions, decode_packet, encode_packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in a test, so a broken broker fails the test instead of
/// hanging it.
pub const WAIT: Duration = Duration::from_secs(5);

/// Accepts every client; topics under `forbidden/` may be neither published nor subscribed.
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, connect: &Connect, _peer: SocketAddr) -> Result<Identity, ReasonCode> {
        let principal = connect
            .username
            .as_deref()
            .unwrap_or("anonymous")
            .to_owned();
        Ok(Identity::of_connect(principal, connect))
    }

    fn authorize(
        &self,
        _identity: &Identity,
        _access: Access,
        topic_or_filter: &str,
    ) -> Result<(), ReasonCode> {
        if topic_or_filter.starts_with("forbidden/") {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        Ok(())
    }
}

/// Rejects every client with 0x86 (bad user name or password).
pub struct RejectAll;

impl Authenticator for RejectAll {
    fn authenticate(&self, _connect: &Connect, _peer: SocketAddr) -> Result<Identity, ReasonCode> {
        Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    }

    fn authorize(&self, _: &Identity, _: Access, _: &str) -> Result<(), ReasonCode> {
        Err(ReasonCode::NOT_AUTHORIZED)
    }
}

/// An instance serving a region listener on an ephemeral port of 127.0.0.1.
pub struct TestBroker {
    pub instance: Arc<Instance>,
    pub addr: SocketAddr,
    pub stop_listener: CancellationToken,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::start_with(InstanceSettings::new("mqtt-test"), Arc::new(AllowAll)).await
    }

    pub async fn start_with(
        settings: InstanceSettings,
        auth: Arc<dyn Authenticator>,
    ) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let instance = Instance::new(settings, auth);
        let stop_listener = CancellationToken::new();
        tokio::spawn(Arc::clone(&instance).serve(listener, stop_listener.clone()));
        TestBroker {
            instance,
            addr,
            stop_listener,
        }
    }
}

/// Builds a CONNECT without credentials or properties.
pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn publish_packet(topic: &str, qos: QoS, packet_id: Option<u16>, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        properties: Properties::default(),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

pub fn subscribe_packet(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    let subscriptions = filters
        .iter()
        .map(|(filter, qos)| Subscription {
            filter: (*filter).into(),
            options: SubscriptionOptions::with_qos(*qos),
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id,
        subscriptions,
        properties: Properties::default(),
    })
}

/// A client that writes packets or raw bytes and reads the broker's packets one at a time.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to test broker");
        RawClient {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Connects, sends `connect` and returns the client with the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::open(addr, connect.protocol).await;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(connack)) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects and fails the test unless the CONNACK accepts the client.
    pub async fn connect_ok(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let (client, connack) = RawClient::connect(addr, connect).await;
        assert_eq!(connack.reason, ReasonCode::SUCCESS, "CONNACK {connack:?}");
        (client, connack)
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode_packet(packet, self.version, &mut out);
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to test broker");
    }

    /// Reads the next packet, or returns `None` when the broker closes the connection. Fails the
    /// test if nothing arrives within [`WAIT`].
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.read_packet())
            .await
            .expect("no packet within 5 s")
    }

    /// Reads the next packet if one arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, self.read_packet())
            .await
            .ok()
            .flatten()
    }

    /// Reads packets until the broker closes the connection and returns them.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }

    /// Reads one PUBLISH, failing the test on anything else.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
        self.send(&subscribe_packet(packet_id, filters)).await;
        match self.recv().await {
            Some(Packet::SubAck(suback)) => {
                assert_eq!(suback.packet_id, packet_id);
                suback.reasons
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and waits for the acknowledgement the QoS calls for, completing QoS 2.
    pub async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16, payload: &[u8]) {
        let packet_id = (qos != QoS::AtMostOnce).then_some(packet_id);
        self.send(&Packet::Publish(publish_packet(
            topic, qos, packet_id, payload,
        )))
        .await;
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                let ack = self.recv().await;
                assert!(
                    matches!(&ack, Some(Packet::PubAck(a)) if a.packet_id == id),
                    "{ack:?}"
                );
            }
            (QoS::ExactlyOnce, Some(id)) => {
                let rec = self.recv().await;
                assert!(
                    matches!(&rec, Some(Packet::PubRec(a)) if a.packet_id == id),
                    "{rec:?}"
                );
                self.send(&Packet::PubRel(Ack::new(id))).await;
                let comp = self.recv().await;
                assert!(
                    matches!(&comp, Some(Packet::PubComp(a)) if a.packet_id == id),
                    "{comp:?}"
                );
            }
            _ => {}
        }
    }

    /// Sends PINGREQ and waits for PINGRESP, which proves every earlier packet was handled.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        let reply = self.recv().await;
        assert!(
            matches!(reply, Some(Packet::PingResp)),
            "expected PINGRESP, got {reply:?}"
        );
    }

    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            match decode_packet(&mut self.buf, self.version, u32::MAX) {
                Ok(Some(packet)) => return Some(packet),
                Ok(None) => {}
                Err(error) => panic!("broker sent an undecodable packet: {error}"),
            }
            let read = self.stream.read_buf(&mut self.buf).await;
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// Waits until `condition` holds, checking every 10 ms for at most [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
