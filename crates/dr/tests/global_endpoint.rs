//! The global endpoint and the DR controller with real instances, a real store and raw MQTT
//! packets over loopback TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_api::{ActionContext, Caller, DisasterRecoveryBackend, Principal, ServiceError};
use switchyard_broker::{Access, Authenticator, Identity, Instance, InstanceSettings};
use switchyard_codec::{
    Connect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions, decode_packet, encode_packet,
};
use switchyard_dr::{
    DrController, Edition, FallbackPolicy, GroupSettings, InstanceInfo, Member, Registry,
};
use switchyard_store::{SqliteSettings, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const ACCOUNT: &str = "1000000000000001";
const WAIT: Duration = Duration::from_secs(5);

/// Accepts every login and topic, so these tests see routing alone.
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
    regions: Vec<SocketAddr>,
    data_dir: tempfile::TempDir,
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
}

async fn deployment(member_ids: &[&str], rate: u32, connect_timeout: Duration) -> Deployment {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(200),
    };
    let store = Arc::new(SqliteStore::open(data_dir.path(), settings).expect("store opens"));
    let shutdown = CancellationToken::new();

    let mut members = Vec::new();
    let mut regions = Vec::new();
    for id in member_ids {
        let instance = Instance::new(InstanceSettings::new(*id), Arc::new(AllowAll));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind region listener");
        regions.push(listener.local_addr().expect("local address"));
        tokio::spawn(instance.clone().serve(listener, shutdown.clone()));
        let info = InstanceInfo {
            id: (*id).to_owned(),
            account_id: ACCOUNT.to_owned(),
            region: "cn-test".to_owned(),
            edition: Edition::Platinum,
            disaster_recovery: true,
        };
        members.push(Arc::new(Member::new(
            info,
            instance,
            Some("global".to_owned()),
        )));
    }
    let group = GroupSettings {
        id: "global".to_owned(),
        members: member_ids.iter().map(|id| (*id).to_owned()).collect(),
        fallback: FallbackPolicy::FirstInOrder,
        connect_timeout,
        max_connect_bytes: 1024,
        disconnect_rate_per_second: rate,
        rebalance_on_recovery: false,
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
        data_dir,
        shutdown,
    }
}

fn context() -> ActionContext {
    ActionContext {
        request_id: "00000000-0000-4000-8000-000000000001".to_owned(),
        caller: Caller {
            account_id: ACCOUNT.to_owned(),
            access_key_id: "LTAItest".to_owned(),
            principal: Principal::Root,
        },
        action: "DisasterDowngrade".to_owned(),
        source_ip: None,
    }
}

fn connect_packet(version: ProtocolVersion, client_id: &str, named: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: Some(format!("Signature|LTAItest|{named}").into()),
        password: Some(bytes::Bytes::from_static(b"ignored")),
        properties: Properties::default(),
    }))
}

/// A raw MQTT client over TCP.
struct RawClient {
    stream: TcpStream,
    version: ProtocolVersion,
    buffer: BytesMut,
}

impl RawClient {
    async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawClient {
            stream,
            version,
            buffer: BytesMut::new(),
        }
    }

    async fn send(&mut self, packets: &[Packet]) {
        let mut out = BytesMut::new();
        for packet in packets {
            encode_packet(packet, self.version, &mut out);
        }
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

    async fn connack(&mut self) -> ReasonCode {
        match self.receive().await {
            Some(Packet::ConnAck(ack)) => ack.reason,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

async fn connect(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    named: &str,
) -> RawClient {
    let mut client = RawClient::open(addr, version).await;
    client
        .send(&[connect_packet(version, client_id, named)])
        .await;
    assert_eq!(
        client.connack().await,
        ReasonCode::SUCCESS,
        "{client_id} connects"
    );
    client
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

#[tokio::test]
async fn routes_to_named_member() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let _client = connect(deployment.global, ProtocolVersion::V5, "GID_t@@@named", "b").await;
    wait_until("device on b", || {
        deployment.instance("b").is_connected("GID_t@@@named")
    })
    .await;
    assert!(!deployment.instance("a").is_connected("GID_t@@@named"));
}

#[tokio::test]
async fn unknown_name_falls_back_to_first_member() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let _client = connect(
        deployment.global,
        ProtocolVersion::V3_1_1,
        "GID_t@@@other",
        "zz",
    )
    .await;
    wait_until("device on a", || {
        deployment.instance("a").is_connected("GID_t@@@other")
    })
    .await;
}

#[tokio::test]
async fn no_healthy_member_is_server_unavailable() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    deployment.instance("a").set_healthy(false);
    deployment.instance("b").set_healthy(false);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut client = RawClient::open(deployment.global, version).await;
        client
            .send(&[connect_packet(version, "GID_t@@@late", "a")])
            .await;
        assert_eq!(
            client.connack().await,
            ReasonCode::SERVER_UNAVAILABLE,
            "{version:?}"
        );
        assert!(
            client.receive().await.is_none(),
            "connection closes after the refusal"
        );
    }
}

#[tokio::test]
async fn bytes_after_connect_reach_the_member() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let mut client = RawClient::open(deployment.global, ProtocolVersion::V5).await;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 7,
        subscriptions: vec![Subscription {
            filter: "sensors/#".into(),
            options: SubscriptionOptions::with_qos(QoS::AtLeastOnce),
        }],
        properties: Properties::default(),
    });
    // One write: the endpoint reads both packets, parses only CONNECT and passes the rest on.
    client
        .send(&[
            connect_packet(ProtocolVersion::V5, "GID_t@@@pipelined", "a"),
            subscribe,
            Packet::PingReq,
        ])
        .await;
    assert_eq!(client.connack().await, ReasonCode::SUCCESS);
    match client.receive().await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.packet_id, 7);
            assert_eq!(ack.reasons, vec![ReasonCode::GRANTED_QOS_1]);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(client.receive().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn oversized_connect_is_closed() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let mut client = RawClient::open(deployment.global, ProtocolVersion::V3_1_1).await;
    let long_id = format!("GID_t@@@{}", "x".repeat(2000));
    client
        .send(&[connect_packet(ProtocolVersion::V3_1_1, &long_id, "a")])
        .await;
    assert!(
        client.receive().await.is_none(),
        "a CONNECT over max_connect_bytes closes"
    );
}

#[tokio::test]
async fn slow_connect_times_out() {
    let deployment = deployment(&["a", "b"], 1000, Duration::from_millis(200)).await;
    let mut client = RawClient::open(deployment.global, ProtocolVersion::V3_1_1).await;
    client
        .stream
        .write_all(&[0x10])
        .await
        .expect("write one byte");
    assert!(
        client.receive().await.is_none(),
        "an unfinished CONNECT is closed at the deadline"
    );
}

#[tokio::test]
async fn downgrade_moves_only_global_devices() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let mut v5 = connect(deployment.global, ProtocolVersion::V5, "GID_t@@@v5", "a").await;
    let mut v311 = connect(
        deployment.global,
        ProtocolVersion::V3_1_1,
        "GID_t@@@v311",
        "a",
    )
    .await;
    let mut regional = connect(
        deployment.regions[0],
        ProtocolVersion::V5,
        "GID_t@@@regional",
        "a",
    )
    .await;

    deployment
        .controller
        .downgrade(&context(), "a", "a")
        .await
        .expect("downgrade succeeds");

    match v5.receive().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
        }
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    }
    assert!(v5.receive().await.is_none());
    assert!(
        v311.receive().await.is_none(),
        "3.1.1 devices are closed without DISCONNECT"
    );

    regional.send(&[Packet::PingReq]).await;
    assert_eq!(
        regional.receive().await,
        Some(Packet::PingResp),
        "region devices stay"
    );

    let _moved = connect(deployment.global, ProtocolVersion::V5, "GID_t@@@v5", "a").await;
    wait_until("device on b", || {
        deployment.instance("b").is_connected("GID_t@@@v5")
    })
    .await;
}

#[tokio::test]
async fn downgrade_rules_and_idempotence() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let ctx = context();
    let controller = &deployment.controller;

    controller
        .downgrade(&ctx, "a", "a")
        .await
        .expect("first downgrade");
    controller
        .downgrade(&ctx, "b", "a")
        .await
        .expect("repeat changes nothing");
    let last = controller.downgrade(&ctx, "a", "b").await;
    assert!(
        matches!(&last, Err(ServiceError::InvalidParameter { name, .. }) if name == "DowngradeInstanceId"),
        "last member: {last:?}"
    );
    controller.recover(&ctx, "b", "a").await.expect("recovery");
    controller
        .recover(&ctx, "b", "a")
        .await
        .expect("repeat recovery changes nothing");
    controller
        .downgrade(&ctx, "a", "b")
        .await
        .expect("b can go now that a is back");

    let unknown = controller.downgrade(&ctx, "a", "nowhere").await;
    assert!(
        matches!(
            unknown,
            Err(ServiceError::InstancePermissionCheckFailed { .. })
        ),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn failed_store_write_changes_nothing() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    let database = rusqlite::Connection::open(deployment.data_dir.path().join("switchyard.db"))
        .expect("open the database beside the store");
    database
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("lock the database");

    let outcome = deployment.controller.downgrade(&context(), "a", "a").await;
    assert!(
        matches!(outcome, Err(ServiceError::Internal { .. })),
        "{outcome:?}"
    );
    database.execute_batch("ROLLBACK").expect("unlock");

    let member = deployment.registry.member("a").expect("member a");
    assert!(
        member.has_global_access(),
        "access unchanged after the failed write"
    );
    let _device = connect(
        deployment.global,
        ProtocolVersion::V5,
        "GID_t@@@still-a",
        "a",
    )
    .await;
    wait_until("device on a", || {
        deployment.instance("a").is_connected("GID_t@@@still-a")
    })
    .await;
}

#[tokio::test]
async fn downgrade_survives_controller_restart() {
    let deployment = deployment(&["a", "b"], 1000, WAIT).await;
    deployment
        .controller
        .downgrade(&context(), "a", "a")
        .await
        .expect("downgrade");

    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(200),
    };
    let reopened =
        Arc::new(SqliteStore::open(deployment.data_dir.path(), settings).expect("reopen"));
    let members: Vec<Arc<Member>> = ["a", "b"]
        .iter()
        .map(|id| {
            let instance = Instance::new(InstanceSettings::new(*id), Arc::new(AllowAll));
            let info = InstanceInfo {
                id: (*id).to_owned(),
                account_id: ACCOUNT.to_owned(),
                region: "cn-test".to_owned(),
                edition: Edition::Platinum,
                disaster_recovery: true,
            };
            Arc::new(Member::new(info, instance, Some("global".to_owned())))
        })
        .collect();
    let registry = Arc::new(Registry::new(members, Vec::new()));
    let _controller = DrController::new(registry.clone(), reopened).expect("state loads");
    assert!(!registry.member("a").expect("a").has_global_access());
    assert!(registry.member("b").expect("b").has_global_access());
}
