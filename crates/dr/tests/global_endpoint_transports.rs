//! The global endpoint over TLS, WebSocket and secure WebSocket: devices are routed as over
//! TCP, their traffic reaches the member, and a downgrade moves them, on 127.0.0.1 with
//! certificates generated for each test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchyard_api::{ActionContext, Caller, DisasterRecoveryBackend, Principal};
use switchyard_broker::{Access, Authenticator, Identity, Instance, InstanceSettings};
use switchyard_codec::{
    Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};
use switchyard_dr::{
    DrController, Edition, FallbackPolicy, GroupSettings, InstanceInfo, Member, Registry,
};
use switchyard_store::{SqliteSettings, SqliteStore};
use switchyard_transport::testing::{MqttClient, TestPki, connect_websocket};
use switchyard_transport::{TransportAcceptor, WebSocketByteStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const ACCOUNT: &str = "1000000000000001";
const WAIT: Duration = Duration::from_secs(5);
const V5: ProtocolVersion = ProtocolVersion::V5;

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

/// Members `a` and `b` with TCP region listeners, and one global endpoint listener.
struct Deployment {
    registry: Arc<Registry>,
    controller: DrController,
    global: SocketAddr,
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
}

async fn deployment(global_acceptor: TransportAcceptor) -> Deployment {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(200),
    };
    let store = Arc::new(SqliteStore::open(data_dir.path(), settings).expect("store opens"));
    let shutdown = CancellationToken::new();

    let member_ids = ["a", "b"];
    let mut members = Vec::new();
    let mut regions = Vec::new();
    for id in member_ids {
        let instance = Instance::new(InstanceSettings::new(id), Arc::new(AllowAll));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind region");
        regions.push(listener.local_addr().expect("local address"));
        tokio::spawn(instance.clone().serve(listener, shutdown.clone()));
        let info = InstanceInfo {
            id: id.to_owned(),
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
        connect_timeout: WAIT,
        max_connect_bytes: 1024,
        disconnect_rate_per_second: 1000,
        rebalance_on_recovery: false,
    };
    let registry = Arc::new(Registry::new(members, vec![group]));
    let controller = DrController::new(registry.clone(), store).expect("controller loads state");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind global");
    let global = listener.local_addr().expect("local address");
    let group = registry.group("global").expect("group exists").clone();
    tokio::spawn(switchyard_dr::endpoint::serve_with(
        group,
        listener,
        Arc::new(global_acceptor),
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

fn context() -> ActionContext {
    ActionContext {
        request_id: "00000000-0000-4000-8000-000000000002".to_owned(),
        caller: Caller {
            account_id: ACCOUNT.to_owned(),
            access_key_id: "LTAItest".to_owned(),
            principal: Principal::Root,
        },
        action: "DisasterDowngrade".to_owned(),
        source_ip: None,
    }
}

fn connect_packet(client_id: &str, named: &str) -> Connect {
    Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: Some(format!("Signature|LTAItest|{named}").into()),
        password: Some(Bytes::from_static(b"ignored")),
        properties: Properties::default(),
    }
}

async fn connect_ok<S>(stream: S, client_id: &str, named: &str) -> MqttClient<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = MqttClient::new(stream, V5);
    let connack = client.connect(connect_packet(client_id, named)).await;
    assert_eq!(
        connack.reason,
        ReasonCode::SUCCESS,
        "{client_id}: {connack:?}"
    );
    client
}

async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(client: &mut MqttClient<S>, filter: &str) {
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions::with_qos(QoS::AtMostOnce),
        }],
        properties: Properties::default(),
    });
    client.send(&[subscribe]).await;
    match client.receive().await {
        Some(Packet::SubAck(suback)) => assert_eq!(suback.reasons, vec![ReasonCode::SUCCESS]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn publish_packet(topic: &str, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    })
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

/// Subscribes `device`, publishes from a TCP client on `region` of the same member, and
/// asserts that the device receives the message over its transport.
async fn assert_receives_from_region<S>(device: &mut MqttClient<S>, region: SocketAddr, id: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    subscribe(device, "sensors/routed").await;
    let tcp = TcpStream::connect(region).await.expect("connect region");
    let mut publisher = connect_ok(tcp, &format!("GID_t@@@publisher-{id}"), id).await;
    publisher
        .send(&[publish_packet("sensors/routed", b"from region")])
        .await;
    match device.receive().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(&*publish.topic, "sensors/routed");
            assert_eq!(publish.payload, Bytes::from_static(b"from region"));
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_endpoint_routes_to_named_member() {
    let pki = TestPki::generate();
    let deployment = deployment(TransportAcceptor::tls(pki.server_config(false))).await;
    let tls = pki
        .connect_tls(deployment.global, false)
        .await
        .expect("TLS connect");
    let mut device = connect_ok(tls, "GID_t@@@tls", "b").await;

    wait_until("device on b", || {
        deployment.instance("b").is_connected("GID_t@@@tls")
    })
    .await;
    assert!(!deployment.instance("a").is_connected("GID_t@@@tls"));
    assert_receives_from_region(&mut device, deployment.regions[1], "b").await;
}

#[tokio::test]
async fn mutual_tls_endpoint_routes_device_with_certificate() {
    let pki = TestPki::generate();
    let deployment = deployment(TransportAcceptor::tls(pki.server_config(true))).await;

    let tls = pki
        .connect_tls(deployment.global, true)
        .await
        .expect("TLS connect");
    let _device = connect_ok(tls, "GID_t@@@mtls", "a").await;
    wait_until("device on a", || {
        deployment.instance("a").is_connected("GID_t@@@mtls")
    })
    .await;

    if let Ok(tls) = pki.connect_tls(deployment.global, false).await {
        let mut client = MqttClient::new(tls, V5);
        client
            .send(&[Packet::Connect(Box::new(connect_packet(
                "GID_t@@@anon",
                "a",
            )))])
            .await;
        assert_eq!(
            client.receive().await,
            None,
            "a device without certificate was answered"
        );
    }
    assert!(!deployment.instance("a").is_connected("GID_t@@@anon"));
}

#[tokio::test]
async fn websocket_endpoint_routes_to_named_member() {
    let deployment = deployment(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(deployment.global)
        .await
        .expect("connect");
    let url = format!("ws://{}/mqtt", deployment.global);
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut device = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@ws", "b").await;

    wait_until("device on b", || {
        deployment.instance("b").is_connected("GID_t@@@ws")
    })
    .await;
    assert_receives_from_region(&mut device, deployment.regions[1], "b").await;
}

#[tokio::test]
async fn secure_websocket_endpoint_falls_back() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::secure_websocket(pki.server_config(false), None);
    let deployment = deployment(acceptor).await;
    let tls = pki
        .connect_tls(deployment.global, false)
        .await
        .expect("TLS connect");
    let (ws, _) = connect_websocket(tls, "wss://localhost/mqtt", &["mqtt"])
        .await
        .expect("upgrade");
    let mut device = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@wss", "unknown").await;

    wait_until("device on a", || {
        deployment.instance("a").is_connected("GID_t@@@wss")
    })
    .await;
    assert_receives_from_region(&mut device, deployment.regions[0], "a").await;
}

#[tokio::test]
async fn downgrade_disconnects_websocket_device() {
    let deployment = deployment(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(deployment.global)
        .await
        .expect("connect");
    let url = format!("ws://{}/mqtt", deployment.global);
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut device = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@moved", "a").await;
    wait_until("device on a", || {
        deployment.instance("a").is_connected("GID_t@@@moved")
    })
    .await;

    deployment
        .controller
        .downgrade(&context(), "a", "a")
        .await
        .expect("downgrade succeeds");
    match device.receive().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER);
        }
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    }

    let tcp = TcpStream::connect(deployment.global)
        .await
        .expect("connect");
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let _moved = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@moved", "a").await;
    wait_until("device on b", || {
        deployment.instance("b").is_connected("GID_t@@@moved")
    })
    .await;
}
