//! Runs the whole benchmark against a small in-process stand-in for a two-member DR group. Its
//! global endpoint sends devices to the first member until DisasterDowngrade and to the survivor
//! afterwards. It also has the survivor's region listener and an API that switches the state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::BytesMut;
use switchyard_codec::{
    Ack, ConnAck, Disconnect, Packet, Properties, Publish, QoS, SubAck, decode_connect,
    encode_packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use super::*;

/// Shared state of the stand-in deployment.
struct FakeGroup {
    downgraded: AtomicBool,
    /// When set, DisasterDowngrade returns HTTP 400 and nothing changes.
    reject_downgrade: bool,
    /// A message on this channel disconnects every connection to the first member.
    disconnect_first: broadcast::Sender<()>,
    /// Payloads published on the survivor, delivered to its subscribers.
    survivor_messages: broadcast::Sender<Bytes>,
    recoveries: AtomicUsize,
}

struct FakeAddrs {
    global: SocketAddr,
    api: SocketAddr,
    survivor: SocketAddr,
}

async fn start_fake_group(reject_downgrade: bool) -> (Arc<FakeGroup>, FakeAddrs) {
    let group = Arc::new(FakeGroup {
        downgraded: AtomicBool::new(false),
        reject_downgrade,
        disconnect_first: broadcast::channel(4).0,
        survivor_messages: broadcast::channel(16).0,
        recoveries: AtomicUsize::new(0),
    });

    let global = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let survivor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = FakeAddrs {
        global: global.local_addr().unwrap(),
        api: api.local_addr().unwrap(),
        survivor: survivor.local_addr().unwrap(),
    };

    let state = group.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = global.accept().await {
            let on_survivor = state.downgraded.load(Ordering::SeqCst);
            tokio::spawn(serve_mqtt(socket, state.clone(), on_survivor));
        }
    });

    let state = group.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = survivor.accept().await {
            tokio::spawn(serve_mqtt(socket, state.clone(), true));
        }
    });

    let state = group.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = api.accept().await {
            tokio::spawn(serve_api(socket, state.clone()));
        }
    });

    (group, addrs)
}

/// Serves one MQTT connection on the survivor (`on_survivor`) or on the first member.
async fn serve_mqtt(mut socket: TcpStream, group: Arc<FakeGroup>, on_survivor: bool) {
    let mut disconnect = group.disconnect_first.subscribe();
    let mut messages = group.survivor_messages.subscribe();
    let mut buffer = BytesMut::new();
    let connect = loop {
        if let Some(connect) = decode_connect(&mut buffer, 1 << 20).unwrap() {
            break connect;
        }
        if socket.read_buf(&mut buffer).await.unwrap_or(0) == 0 {
            return;
        }
    };
    let version = connect.protocol;
    let mut out = BytesMut::new();
    let mut send = async |socket: &mut TcpStream, packet: Packet| {
        out.clear();
        encode_packet(&packet, version, &mut out);
        socket.write_all(&out).await.is_ok()
    };
    let connack = ConnAck {
        session_present: false,
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    if !send(&mut socket, Packet::ConnAck(connack)).await {
        return;
    }
    loop {
        tokio::select! {
            read = socket.read_buf(&mut buffer) => {
                if read.unwrap_or(0) == 0 {
                    return;
                }
                while let Some(packet) = switchyard_codec::decode_packet(&mut buffer, version, 1 << 20).unwrap() {
                    let reply = match packet {
                        Packet::Subscribe(subscribe) => Packet::SubAck(SubAck {
                            packet_id: subscribe.packet_id,
                            reasons: vec![ReasonCode::GRANTED_QOS_1],
                            properties: Properties::default(),
                        }),
                        Packet::Publish(publish) => {
                            let _ = group.survivor_messages.send(publish.payload.clone());
                            Packet::PubAck(Ack::new(publish.packet_id.unwrap_or(1)))
                        }
                        Packet::PingReq => Packet::PingResp,
                        Packet::Disconnect(_) => return,
                        _ => continue,
                    };
                    if !send(&mut socket, reply).await {
                        return;
                    }
                }
            }
            Ok(()) = disconnect.recv(), if !on_survivor => {
                if version.is_v5() {
                    let packet = Packet::Disconnect(Disconnect::new(ReasonCode::USE_ANOTHER_SERVER));
                    send(&mut socket, packet).await;
                }
                return;
            }
            Ok(payload) = messages.recv(), if on_survivor => {
                let publish = Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "sensors/bench/all".into(),
                    packet_id: Some(7),
                    properties: Properties::default(),
                    payload,
                };
                if !send(&mut socket, Packet::Publish(publish)).await {
                    return;
                }
            }
        }
    }
}

/// Replies to one API request, chosen by its `x-acs-action` header.
async fn serve_api(mut socket: TcpStream, group: Arc<FakeGroup>) {
    let mut received = Vec::new();
    let action = loop {
        if socket.read_buf(&mut received).await.unwrap_or(0) == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .map_or(0, |value| value.parse().unwrap());
        if body.len() >= length {
            let action = head
                .lines()
                .find_map(|line| line.strip_prefix("x-acs-action: "))
                .unwrap_or_default()
                .to_owned();
            break action;
        }
    };
    let ok = r#"{"RequestId":"5E2C3D1A-0000-4000-8000-000000000001","Code":200,"Success":true,"Message":"operation success."}"#;
    let (status, body) = match action.as_str() {
        "DisasterDowngrade" if group.reject_downgrade => (
            "400 Bad Request",
            r#"{"RequestId":"R","Code":"InvalidParameter.DowngradeInstanceId","Message":"no member would be left"}"#,
        ),
        "DisasterDowngrade" => {
            group.downgraded.store(true, Ordering::SeqCst);
            ("200 OK", ok)
        }
        "DisasterRecovery" => {
            group.recoveries.fetch_add(1, Ordering::SeqCst);
            group.downgraded.store(false, Ordering::SeqCst);
            ("200 OK", ok)
        }
        _ => ("404 Not Found", r#"{"Code":"InvalidApi.NotFound"}"#),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
    // Disconnect after the reply, as a paced server may, so devices leave after T0.
    if action == "DisasterDowngrade" && !group.reject_downgrade {
        let _ = group.disconnect_first.send(());
    }
}

fn options(addrs: &FakeAddrs, devices: usize) -> FailoverOptions {
    FailoverOptions {
        global_addr: addrs.global,
        api_addr: addrs.api,
        access_key_id: "LTAItest".to_owned(),
        access_key_secret: "secret".to_owned(),
        instance: "mqtt-cn-hz01".to_owned(),
        survivor: "mqtt-cn-sh01".to_owned(),
        survivor_addr: addrs.survivor,
        devices,
        group_id: "GID_demo".to_owned(),
        topic_prefix: "sensors/bench".to_owned(),
        protocol: ProtocolMix::Mixed,
        timeout: Duration::from_secs(20),
        recover: true,
        connect_concurrency: 8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_against_fake_group() {
    let (group, addrs) = start_fake_group(false).await;
    let report = run(&options(&addrs, 40)).await;

    assert_eq!(report.failure, None, "{}", report.to_text());
    assert_eq!(report.devices_v5, 20);
    assert_eq!(report.devices_v311, 20);
    assert_eq!(report.disconnected_devices, 40);
    assert_eq!(report.disconnections, 40);
    assert_eq!(report.disconnections_before_downgrade, 0);
    assert_eq!(report.landed_devices, Some(40));
    assert_eq!(
        report.reason_codes,
        vec![
            ("MQTT 3.1.1 closed without DISCONNECT".to_owned(), 20),
            ("MQTT 5.0 0x9C".to_owned(), 20),
        ]
    );
    let after_t0 = report.reconnect_after_t0.expect("reconnection figures");
    assert_eq!(after_t0.count, 40);
    assert!(report.t0_to_last_reconnect_ms.unwrap() >= 0.0);
    assert!(report.recovery_request_id.is_some());
    assert_eq!(group.recoveries.load(Ordering::SeqCst), 1);
    assert_eq!(report.to_json()["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_downgrade_fails_phase() {
    let (group, addrs) = start_fake_group(true).await;
    let report = run(&options(&addrs, 4)).await;

    let failure = report.failure.clone().expect("the run fails");
    assert!(failure.starts_with("phase downgrade"), "{failure}");
    assert!(
        failure.contains("InvalidParameter.DowngradeInstanceId"),
        "{failure}"
    );
    assert!(report.connect_phase.is_some());
    assert_eq!(report.landed_devices, None);
    // Nothing was downgraded, so nothing is recovered.
    assert_eq!(group.recoveries.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_global_endpoint_times_out() {
    // Bind and drop a listener to get a loopback port that refuses connections.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_, addrs) = start_fake_group(false).await;
    let mut options = options(&addrs, 3);
    options.global_addr = closed.local_addr().unwrap();
    drop(closed);
    options.timeout = Duration::from_secs(1);
    let report = run(&options).await;

    let failure = report.failure.clone().expect("the run fails");
    assert!(failure.starts_with("phase connect timed out"), "{failure}");
    assert!(failure.contains("3 of 3 devices"), "{failure}");
    assert!(report.failed_attempts > 0);
}
