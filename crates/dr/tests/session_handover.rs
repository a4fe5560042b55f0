//! Sessions that follow a device across a DR switchover: real instances, a real SQLite store,
//! the global endpoint and raw MQTT packets over loopback TCP.
//!
//! The device is `GID_t@@@device`, named member `hz01` in its username, with a persistent
//! session. A publisher on `hz01`'s region listener is never disconnected by the DR actions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchyard_api::{ActionContext, Caller, DisasterRecoveryBackend, Principal};
use switchyard_broker::{Access, Authenticator, Identity, Instance, InstanceSettings};
use switchyard_codec::{
    Ack, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, decode_packet, encode_packet,
};
use switchyard_dr::{
    DrController, Edition, FallbackPolicy, GroupSettings, InstanceInfo, Member, Registry,
};
use switchyard_store::{
    MessageStore, MessageStoreSettings, SqliteMessageStore, SqliteSettings, SqliteStore,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const ACCOUNT: &str = "1000000000000001";
const WAIT: Duration = Duration::from_secs(5);
const DEVICE: &str = "GID_t@@@device";
const HZ01: &str = "hz01";
const SH01: &str = "sh01";

/// Accepts every login and topic, so these tests see the handover alone.
struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, connect: &Connect, _peer: SocketAddr) -> Result<Identity, ReasonCode> {
        Ok(Identity::of_connect("test", connect))
    }

    fn authorize(&self, _: &Identity, _: Access, _: &str) -> Result<(), ReasonCode> {
        Ok(())
    }
}

struct Deployment {
    registry: Arc<Registry>,
    controller: DrController,
    global: SocketAddr,
    /// Region listeners, in the order of the members.
    regions: Vec<SocketAddr>,
    _data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Deployment {
    fn instance(&self, id: &str) -> &Arc<Instance> {
        &self.registry.member(id).expect("member exists").instance
    }

    async fn downgrade(&self, target: &str) {
        self.controller
            .downgrade(&context("DisasterDowngrade"), HZ01, target)
            .await
            .expect("downgrade succeeds");
    }

    async fn recover(&self, target: &str) {
        self.controller
            .recover(&context("DisasterRecovery"), HZ01, target)
            .await
            .expect("recovery succeeds");
    }
}

/// Starts members `hz01` and `sh01` in one group, with region listeners, a global endpoint
/// and a controller on a fresh store.
async fn deployment(rebalance_on_recovery: bool) -> Deployment {
    deployment_with(rebalance_on_recovery, None).await
}

/// Starts the deployment of [`deployment`], with the members writing their sessions to
/// `message_store` when one is given.
async fn deployment_with(
    rebalance_on_recovery: bool,
    message_store: Option<&Arc<dyn MessageStore>>,
) -> Deployment {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(200),
    };
    let store = Arc::new(SqliteStore::open(data_dir.path(), settings).expect("store opens"));
    let shutdown = CancellationToken::new();

    let mut members = Vec::new();
    let mut regions = Vec::new();
    for id in [HZ01, SH01] {
        let settings = InstanceSettings::new(id);
        let instance = match message_store {
            Some(store) => Instance::with_store(settings, Arc::new(AllowAll), Arc::clone(store))
                .await
                .expect("instance loads its sessions"),
            None => Instance::new(settings, Arc::new(AllowAll)),
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind region listener");
        regions.push(listener.local_addr().expect("local address"));
        tokio::spawn(instance.clone().serve(listener, shutdown.clone()));
        let info = InstanceInfo {
            id: id.to_owned(),
            account_id: ACCOUNT.to_owned(),
            region: "cn-test".to_owned(),
            edition: Edition::Platinum,
            disaster_recovery: true,
        };
        let member = Member::new(info, instance, Some("global".to_owned()));
        members.push(Arc::new(member));
    }
    let group = GroupSettings {
        id: "global".to_owned(),
        members: vec![HZ01.to_owned(), SH01.to_owned()],
        fallback: FallbackPolicy::FirstInOrder,
        connect_timeout: WAIT,
        max_connect_bytes: 1024,
        disconnect_rate_per_second: 1000,
        rebalance_on_recovery,
    };
    let registry = Arc::new(Registry::new(members, vec![group]));
    let controller = DrController::new(registry.clone(), store).expect("controller loads state");

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind global listener");
    let global = listener.local_addr().expect("local address");
    let group = registry.group("global").expect("group exists").clone();
    tokio::spawn(switchyard_dr::endpoint::serve(
        group,
        listener,
        shutdown.clone(),
    ));

    Deployment {
        registry,
        controller,
        global,
        regions,
        _data_dir: data_dir,
        shutdown,
    }
}

fn context(action: &str) -> ActionContext {
    ActionContext {
        request_id: "00000000-0000-4000-8000-000000000002".to_owned(),
        caller: Caller {
            account_id: ACCOUNT.to_owned(),
            access_key_id: "LTAItest".to_owned(),
            principal: Principal::Root,
        },
        action: action.to_owned(),
        source_ip: None,
    }
}

/// A raw MQTT client over TCP.
struct RawClient {
    stream: TcpStream,
    version: ProtocolVersion,
    buffer: BytesMut,
}

impl RawClient {
    /// Connects with a persistent session (Clean Start 0, Session Expiry 3600 s in 5.0) and
    /// returns the client with CONNACK's Session Present flag.
    async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        named: &str,
    ) -> (RawClient, bool) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut client = RawClient {
            stream,
            version,
            buffer: BytesMut::new(),
        };
        let properties = if version.is_v5() {
            Properties {
                session_expiry_interval: Some(3600),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        let connect = Connect {
            protocol: version,
            clean_start: false,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: Some(format!("Signature|LTAItest|{named}").into()),
            password: Some(Bytes::from_static(b"ignored")),
            properties,
        };
        client.send(Packet::Connect(Box::new(connect))).await;
        match client.receive().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, ReasonCode::SUCCESS, "{client_id} connects");
                (client, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        encode_packet(&packet, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Reads the next packet; `None` when the server closed the connection.
    async fn receive(&mut self) -> Option<Packet> {
        let read = async {
            loop {
                match decode_packet(&mut self.buffer, self.version, 1 << 20) {
                    Ok(Some(packet)) => return Some(packet),
                    Ok(None) => {}
                    Err(err) => panic!("server sent an invalid packet: {err}"),
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("server answered in time")
    }

    async fn expect(&mut self) -> Packet {
        self.receive().await.expect("connection stays open")
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let subscribe = Subscribe {
            packet_id: 1,
            subscriptions: vec![Subscription {
                filter: filter.into(),
                options: SubscriptionOptions::with_qos(qos),
            }],
            properties: Properties::default(),
        };
        self.send(Packet::Subscribe(subscribe)).await;
        match self.expect().await {
            Packet::SubAck(ack) => assert!(!ack.reasons[0].is_error(), "{filter}: {ack:?}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16, payload: &'static [u8]) {
        let publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload: Bytes::from_static(payload),
        };
        self.send(Packet::Publish(publish)).await;
    }

    /// Publishes at QoS 1 or 2 and completes the exchange, so the broker acknowledged it.
    async fn publish_acknowledged(
        &mut self,
        topic: &str,
        qos: QoS,
        packet_id: u16,
        payload: &'static [u8],
    ) {
        self.publish(topic, qos, packet_id, payload).await;
        match (qos, self.expect().await) {
            (QoS::AtLeastOnce, Packet::PubAck(ack)) => assert_eq!(ack.packet_id, packet_id),
            (QoS::ExactlyOnce, Packet::PubRec(ack)) => {
                assert_eq!(ack.packet_id, packet_id);
                self.send(Packet::PubRel(Ack::new(packet_id))).await;
                match self.expect().await {
                    Packet::PubComp(ack) => assert_eq!(ack.packet_id, packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
            (_, other) => panic!("expected the acknowledgement of {payload:?}, got {other:?}"),
        }
    }

    async fn expect_publish(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends PINGREQ and checks that PINGRESP is the next packet, so nothing else was pending.
    async fn expect_nothing_pending(&mut self) {
        self.send(Packet::PingReq).await;
        assert_eq!(self.receive().await, Some(Packet::PingResp));
    }

    /// Reads until the server closes, checking that a 5.0 client got DISCONNECT 0x9C first.
    async fn expect_use_another_server(&mut self) {
        if self.version.is_v5() {
            match self.receive().await {
                Some(Packet::Disconnect(disconnect)) => {
                    assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
                }
                other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
            }
        }
        assert!(self.receive().await.is_none(), "connection closes");
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the reviewer's scenario at QoS 1 for `version`: one message in flight at the downgrade
/// and two published while the device is offline reach it on `sh01`.
async fn qos1_survives_downgrade(version: ProtocolVersion) {
    let deployment = deployment(false).await;
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(!present, "first connection starts a session");
    device.subscribe("sensors/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connect(
        deployment.regions[0],
        ProtocolVersion::V5,
        "GID_t@@@publisher",
        HZ01,
    )
    .await;

    publisher
        .publish_acknowledged("sensors/1", QoS::AtLeastOnce, 1, b"inflight")
        .await;
    let inflight = device.expect_publish().await;
    assert_eq!(inflight.payload, Bytes::from_static(b"inflight"));

    deployment.downgrade(HZ01).await;
    device.expect_use_another_server().await;
    let hz01 = deployment.instance(HZ01);
    wait_until("session offline on hz01", || !hz01.is_connected(DEVICE)).await;
    publisher
        .publish_acknowledged("sensors/2", QoS::AtLeastOnce, 2, b"offline-1")
        .await;
    publisher
        .publish_acknowledged("sensors/3", QoS::AtLeastOnce, 3, b"offline-2")
        .await;

    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the session moved with the device");
    assert!(deployment.instance(SH01).is_connected(DEVICE));
    assert!(!hz01.has_session(DEVICE), "hz01 gave the session up");

    let resent = device.expect_publish().await;
    assert!(resent.dup, "unacknowledged message is resent with DUP");
    assert_eq!(resent.payload, Bytes::from_static(b"inflight"));
    let first = device.expect_publish().await;
    assert_eq!(first.payload, Bytes::from_static(b"offline-1"));
    let second = device.expect_publish().await;
    assert_eq!(second.payload, Bytes::from_static(b"offline-2"));
    for publish in [&resent, &first, &second] {
        let packet_id = publish.packet_id.expect("QoS 1 has a packet id");
        device.send(Packet::PubAck(Ack::new(packet_id))).await;
    }
    device.expect_nothing_pending().await;
}

#[tokio::test]
async fn qos1_messages_follow_v5_device() {
    qos1_survives_downgrade(ProtocolVersion::V5).await;
}

#[tokio::test]
async fn qos1_messages_follow_v311_device() {
    qos1_survives_downgrade(ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn qos2_state_follows_device() {
    let deployment = deployment(false).await;
    let version = ProtocolVersion::V5;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    device.subscribe("sensors/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        RawClient::connect(deployment.regions[0], version, "GID_t@@@publisher", HZ01).await;
    publisher.subscribe("upstream/#", QoS::ExactlyOnce).await;

    // "released" got PUBREC from the device, so hz01 sent PUBREL; "unreceived" got nothing.
    publisher
        .publish_acknowledged("sensors/1", QoS::ExactlyOnce, 1, b"released")
        .await;
    let released = device.expect_publish().await;
    let released_id = released.packet_id.expect("QoS 2 has a packet id");
    device.send(Packet::PubRec(Ack::new(released_id))).await;
    match device.expect().await {
        Packet::PubRel(ack) => assert_eq!(ack.packet_id, released_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    publisher
        .publish_acknowledged("sensors/2", QoS::ExactlyOnce, 2, b"unreceived")
        .await;
    let unreceived = device.expect_publish().await;
    assert_eq!(unreceived.payload, Bytes::from_static(b"unreceived"));

    // The device publishes at QoS 2 and is disconnected before it sends PUBREL.
    device
        .publish("upstream/1", QoS::ExactlyOnce, 20, b"inbound")
        .await;
    match device.expect().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 20),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let forwarded = publisher.expect_publish().await;
    assert_eq!(forwarded.payload, Bytes::from_static(b"inbound"));
    let forwarded_id = forwarded.packet_id.expect("QoS 2 has a packet id");
    publisher.send(Packet::PubRec(Ack::new(forwarded_id))).await;
    assert!(matches!(publisher.expect().await, Packet::PubRel(_)));
    publisher
        .send(Packet::PubComp(Ack::new(forwarded_id)))
        .await;

    deployment.downgrade(HZ01).await;
    device.expect_use_another_server().await;
    let hz01 = deployment.instance(HZ01);
    wait_until("session offline on hz01", || !hz01.is_connected(DEVICE)).await;
    publisher
        .publish_acknowledged("sensors/3", QoS::ExactlyOnce, 3, b"offline")
        .await;

    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the session moved with the device");
    match device.expect().await {
        Packet::PubRel(ack) => assert_eq!(ack.packet_id, released_id, "PUBREL is resent"),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    let resent = device.expect_publish().await;
    assert!(resent.dup, "PUBLISH without PUBREC is resent with DUP");
    assert_eq!(resent.packet_id, unreceived.packet_id);
    assert_eq!(resent.payload, Bytes::from_static(b"unreceived"));
    let offline = device.expect_publish().await;
    assert!(!offline.dup);
    assert_eq!(offline.payload, Bytes::from_static(b"offline"));

    device.send(Packet::PubComp(Ack::new(released_id))).await;
    for publish in [&resent, &offline] {
        let packet_id = publish.packet_id.expect("QoS 2 has a packet id");
        device.send(Packet::PubRec(Ack::new(packet_id))).await;
        match device.expect().await {
            Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        device.send(Packet::PubComp(Ack::new(packet_id))).await;
    }

    // The resent inbound PUBLISH is recognized, and PUBREL completes it on sh01.
    let duplicate = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "upstream/1".into(),
        packet_id: Some(20),
        properties: Properties::default(),
        payload: Bytes::from_static(b"inbound"),
    };
    device.send(Packet::Publish(duplicate)).await;
    match device.expect().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 20),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    device.send(Packet::PubRel(Ack::new(20))).await;
    match device.expect().await {
        Packet::PubComp(ack) => {
            assert_eq!(ack.packet_id, 20);
            assert_eq!(
                ack.reason,
                ReasonCode::SUCCESS,
                "packet id 20 was awaiting PUBREL"
            );
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    device.expect_nothing_pending().await;
    publisher.expect_nothing_pending().await;
}

#[tokio::test]
async fn immediate_reconnect_waits_for_detach() {
    let deployment = deployment(false).await;
    let version = ProtocolVersion::V5;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    device.subscribe("sensors/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect(deployment.regions[0], version, "GID_t@@@publisher", HZ01).await;
    publisher
        .publish_acknowledged("sensors/1", QoS::AtLeastOnce, 1, b"inflight")
        .await;
    let inflight = device.expect_publish().await;

    deployment.downgrade(HZ01).await;
    match device.receive().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
        }
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    }
    // Reconnect before reading the close, while hz01 may still be detaching the session.
    let (mut moved, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the session moved with the device");
    let resent = moved.expect_publish().await;
    assert!(resent.dup);
    assert_eq!(resent.packet_id, inflight.packet_id);
    assert_eq!(resent.payload, Bytes::from_static(b"inflight"));
    drop(device);
}

#[tokio::test]
async fn connected_session_is_not_stolen() {
    let deployment = deployment(false).await;
    let version = ProtocolVersion::V5;
    let (mut first, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    first.subscribe("sensors/#", QoS::AtLeastOnce).await;

    // A second device with the same client id is routed to sh01 by its username.
    let (mut second, present) = RawClient::connect(deployment.global, version, DEVICE, SH01).await;
    assert!(!present, "sh01 starts its own session");
    let hz01 = deployment.instance(HZ01);
    assert!(hz01.is_connected(DEVICE), "the session stays on hz01");
    assert_eq!(hz01.subscription_count(), 1);
    first.expect_nothing_pending().await;
    second.expect_nothing_pending().await;
}

#[tokio::test]
async fn region_session_is_not_moved() {
    let deployment = deployment(false).await;
    let version = ProtocolVersion::V5;
    let (mut regional, _) = RawClient::connect(deployment.regions[0], version, DEVICE, HZ01).await;
    regional.subscribe("sensors/#", QoS::AtLeastOnce).await;
    drop(regional);
    let hz01 = deployment.instance(HZ01);
    wait_until("session offline on hz01", || !hz01.is_connected(DEVICE)).await;

    let (_device, present) = RawClient::connect(deployment.global, version, DEVICE, SH01).await;
    assert!(!present, "a session of a region connection stays");
    assert!(hz01.has_session(DEVICE));
}

#[tokio::test]
async fn rebalance_on_recovery_moves_devices_back() {
    let deployment = deployment(true).await;
    let version = ProtocolVersion::V5;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    device.subscribe("sensors/#", QoS::AtLeastOnce).await;
    deployment.downgrade(HZ01).await;
    device.expect_use_another_server().await;
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present);
    let sh01 = deployment.instance(SH01);
    assert!(sh01.is_connected(DEVICE));

    // Devices on sh01 that name sh01 or came through its region listener stay.
    let (mut native, _) =
        RawClient::connect(deployment.global, version, "GID_t@@@native", SH01).await;
    let (mut regional, _) =
        RawClient::connect(deployment.regions[1], version, "GID_t@@@regional", HZ01).await;
    let (mut publisher, _) =
        RawClient::connect(deployment.regions[1], version, "GID_t@@@publisher", SH01).await;
    publisher
        .publish_acknowledged("sensors/1", QoS::AtLeastOnce, 1, b"on-sh01")
        .await;
    let on_sh01 = device.expect_publish().await;
    assert_eq!(on_sh01.payload, Bytes::from_static(b"on-sh01"));

    deployment.recover(HZ01).await;
    device.expect_use_another_server().await;
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the session moved back with the device");
    let hz01 = deployment.instance(HZ01);
    assert!(hz01.is_connected(DEVICE));
    assert!(!sh01.has_session(DEVICE));
    let resent = device.expect_publish().await;
    assert!(resent.dup, "the unacknowledged message from sh01 is resent");
    assert_eq!(resent.payload, Bytes::from_static(b"on-sh01"));
    device
        .send(Packet::PubAck(Ack::new(resent.packet_id.expect("QoS 1"))))
        .await;
    device.expect_nothing_pending().await;

    native.expect_nothing_pending().await;
    regional.expect_nothing_pending().await;
    publisher.expect_nothing_pending().await;
}

#[tokio::test]
async fn recovery_without_rebalance_leaves_devices() {
    let deployment = deployment(false).await;
    let version = ProtocolVersion::V5;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    deployment.downgrade(HZ01).await;
    device.expect_use_another_server().await;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;

    deployment.recover(HZ01).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    device.expect_nothing_pending().await;
    assert!(deployment.instance(SH01).is_connected(DEVICE));
}

fn open_message_store(dir: &std::path::Path) -> Arc<dyn MessageStore> {
    let store = SqliteMessageStore::open(dir, MessageStoreSettings::default());
    Arc::new(store.expect("message store opens"))
}

/// Stops every member and waits until the deployment's tasks let go of the message store.
async fn stop(deployment: Deployment, store: Arc<dyn MessageStore>) {
    for id in [HZ01, SH01] {
        deployment.instance(id).shutdown().await;
    }
    drop(deployment);
    wait_until("tasks release the message store", || {
        Arc::strong_count(&store) == 1
    })
    .await;
    drop(store);
}

#[tokio::test]
async fn moved_session_survives_restart() {
    let message_dir = tempfile::tempdir().expect("temporary directory");
    let store = open_message_store(message_dir.path());
    let deployment = deployment_with(false, Some(&store)).await;
    let version = ProtocolVersion::V5;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    device.subscribe("sensors/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect(deployment.regions[0], version, "GID_t@@@publisher", HZ01).await;

    deployment.downgrade(HZ01).await;
    device.expect_use_another_server().await;
    let hz01 = deployment.instance(HZ01);
    wait_until("session offline on hz01", || !hz01.is_connected(DEVICE)).await;
    publisher
        .publish_acknowledged("sensors/1", QoS::AtLeastOnce, 1, b"queued-1")
        .await;
    publisher
        .publish_acknowledged("sensors/2", QoS::AtLeastOnce, 2, b"queued-2")
        .await;

    // The device lands on sh01 and takes its session along. It receives the two messages
    // but acknowledges neither, then goes away.
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the session moved with the device");
    assert_eq!(device.expect_publish().await.payload, &b"queued-1"[..]);
    assert_eq!(device.expect_publish().await.payload, &b"queued-2"[..]);
    drop(device);
    drop(publisher);
    let sh01 = deployment.instance(SH01);
    wait_until("session offline on sh01", || !sh01.is_connected(DEVICE)).await;
    stop(deployment, store).await;

    // After a restart the session is on sh01 only, with both messages.
    let store = open_message_store(message_dir.path());
    let device_sessions = |state: &switchyard_store::InstanceState| {
        let sessions = state.sessions.iter();
        let device = sessions.filter(|stored| stored.session.client_id == DEVICE);
        device.cloned().collect::<Vec<_>>()
    };
    let on_hz01 = store.load_all(HZ01).await.expect("store loads hz01");
    assert!(device_sessions(&on_hz01).is_empty(), "{on_hz01:?}");
    let on_sh01 = store.load_all(SH01).await.expect("store loads sh01");
    let moved = device_sessions(&on_sh01);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].session.subscriptions.len(), 1);
    let inflight: Vec<&[u8]> = moved[0]
        .inflight
        .iter()
        .map(|(_, inflight)| inflight.message.payload.as_slice())
        .collect();
    assert_eq!(inflight, vec![&b"queued-1"[..], &b"queued-2"[..]]);

    let deployment = deployment_with(false, Some(&store)).await;
    assert!(!deployment.instance(HZ01).has_session(DEVICE));
    assert!(deployment.instance(SH01).has_session(DEVICE));

    // The restored session keeps its global-endpoint origin, so it follows the device back
    // to hz01, which the device names, with both messages resent.
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the restored session moved back with the device");
    assert!(deployment.instance(HZ01).is_connected(DEVICE));
    assert!(!deployment.instance(SH01).has_session(DEVICE));
    for payload in [&b"queued-1"[..], &b"queued-2"[..]] {
        let resent = device.expect_publish().await;
        assert!(resent.dup, "unacknowledged message is resent with DUP");
        assert_eq!(resent.payload, payload);
        let packet_id = resent.packet_id.expect("QoS 1 has a packet id");
        device.send(Packet::PubAck(Ack::new(packet_id))).await;
    }
    device.expect_nothing_pending().await;
}

#[tokio::test]
async fn restored_session_follows_downgrade() {
    let message_dir = tempfile::tempdir().expect("temporary directory");
    let store = open_message_store(message_dir.path());
    let deployment = deployment_with(false, Some(&store)).await;
    let version = ProtocolVersion::V3_1_1;
    let (mut device, _) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    device.subscribe("sensors/#", QoS::AtLeastOnce).await;
    drop(device);
    let hz01 = deployment.instance(HZ01);
    wait_until("session offline on hz01", || !hz01.is_connected(DEVICE)).await;
    let (mut publisher, _) =
        RawClient::connect(deployment.regions[0], version, "GID_t@@@publisher", HZ01).await;
    publisher
        .publish_acknowledged("sensors/1", QoS::AtLeastOnce, 1, b"queued-1")
        .await;
    publisher
        .publish_acknowledged("sensors/2", QoS::AtLeastOnce, 2, b"queued-2")
        .await;
    drop(publisher);
    stop(deployment, store).await;

    // The whole deployment restarts from the store, then hz01 is downgraded, so the device
    // lands on sh01 and its restored session moves there with the queue.
    let store = open_message_store(message_dir.path());
    let deployment = deployment_with(false, Some(&store)).await;
    assert!(deployment.instance(HZ01).has_session(DEVICE));
    deployment.downgrade(HZ01).await;
    let (mut device, present) = RawClient::connect(deployment.global, version, DEVICE, HZ01).await;
    assert!(present, "the restored session moved with the device");
    assert!(deployment.instance(SH01).is_connected(DEVICE));
    assert!(!deployment.instance(HZ01).has_session(DEVICE));
    for payload in [&b"queued-1"[..], &b"queued-2"[..]] {
        let queued = device.expect_publish().await;
        assert!(!queued.dup, "a queued message was never sent before");
        assert_eq!(queued.payload, payload);
        let packet_id = queued.packet_id.expect("QoS 1 has a packet id");
        device.send(Packet::PubAck(Ack::new(packet_id))).await;
    }
    device.expect_nothing_pending().await;

    let is_device = |stored: &&switchyard_store::SessionState| stored.session.client_id == DEVICE;
    let on_hz01 = store.load_all(HZ01).await.expect("store loads hz01");
    assert!(
        !on_hz01.sessions.iter().any(|s| is_device(&s)),
        "{on_hz01:?}"
    );
    let on_sh01 = store.load_all(SH01).await.expect("store loads sh01");
    let moved: Vec<_> = on_sh01.sessions.iter().filter(is_device).collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].session.subscriptions.len(), 1);
}
