//! MQTT through an instance's region listeners over TLS, WebSocket and secure WebSocket, with
//! real TLS and WebSocket clients on 127.0.0.1 and certificates generated for each test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::{AllowAll, WAIT, connect_packet, publish_packet, subscribe_packet};
use futures_util::{SinkExt, StreamExt};
use switchyard_broker::{Instance, InstanceSettings};
use switchyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use switchyard_transport::testing::{MqttClient, TestPki, connect_websocket, encode_packets};
use switchyard_transport::{TransportAcceptor, WebSocketByteStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// One instance with a listener per acceptor, all on ephemeral ports of 127.0.0.1.
struct Broker {
    instance: Arc<Instance>,
    addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn broker(acceptors: Vec<TransportAcceptor>) -> Broker {
    let instance = Instance::new(InstanceSettings::new("mqtt-test"), Arc::new(AllowAll));
    let shutdown = CancellationToken::new();
    let mut addrs = Vec::new();
    for acceptor in acceptors {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.push(listener.local_addr().expect("local address"));
        let serve =
            Arc::clone(&instance).serve_with(listener, Arc::new(acceptor), shutdown.clone());
        tokio::spawn(serve);
    }
    Broker {
        instance,
        addrs,
        shutdown,
    }
}

/// Connects with `client_id` and asserts that the CONNACK accepts it.
async fn connect_ok<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    client_id: &str,
) -> MqttClient<S> {
    let mut client = MqttClient::new(stream, V5);
    let connack = client.connect(connect_packet(V5, client_id, true)).await;
    assert_eq!(
        connack.reason,
        ReasonCode::SUCCESS,
        "{client_id}: {connack:?}"
    );
    client
}

async fn subscribe<S: AsyncRead + AsyncWrite + Unpin>(client: &mut MqttClient<S>, filter: &str) {
    client
        .send(&[subscribe_packet(1, &[(filter, QoS::AtLeastOnce)])])
        .await;
    match client.receive().await {
        Some(Packet::SubAck(suback)) => assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Publishes at QoS 1 and waits for the PUBACK.
async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut MqttClient<S>,
    topic: &str,
    payload: &[u8],
) {
    let publish = publish_packet(topic, QoS::AtLeastOnce, Some(7), payload);
    client.send(&[Packet::Publish(publish)]).await;
    match client.receive().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

async fn expect_publish<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut MqttClient<S>,
    topic: &str,
    payload: &[u8],
) {
    match client.receive().await {
        Some(Packet::Publish(publish)) => {
            assert_eq!(&*publish.topic, topic);
            assert_eq!(publish.payload, Bytes::copy_from_slice(payload));
        }
        other => panic!("expected PUBLISH on {topic}, got {other:?}"),
    }
}

async fn open_websocket(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("WebSocket upgrade");
    ws
}

/// Reads the next binary message, skipping control frames; `None` once the connection ends.
async fn next_binary(ws: &mut WebSocketStream<TcpStream>) -> Option<Bytes> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time");
        match message {
            Some(Ok(Message::Binary(data))) => return Some(data),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test]
async fn tls_clients_exchange_messages() {
    let pki = TestPki::generate();
    let broker = broker(vec![TransportAcceptor::tls(pki.server_config(false))]).await;
    let addr = broker.addrs[0];

    let tls = pki.connect_tls(addr, false).await.expect("TLS connect");
    let mut subscriber = connect_ok(tls, "GID_t@@@tls-sub").await;
    subscribe(&mut subscriber, "sensors/tls").await;
    let tls = pki.connect_tls(addr, false).await.expect("TLS connect");
    let mut publisher = connect_ok(tls, "GID_t@@@tls-pub").await;
    publish(&mut publisher, "sensors/tls", b"over tls").await;
    expect_publish(&mut subscriber, "sensors/tls", b"over tls").await;
    assert!(broker.instance.is_connected("GID_t@@@tls-sub"));
}

#[tokio::test]
async fn mutual_tls_requires_client_certificate() {
    let pki = TestPki::generate();
    let broker = broker(vec![TransportAcceptor::tls(pki.server_config(true))]).await;
    let addr = broker.addrs[0];

    // Without a certificate the handshake fails, on connect or on the first read (TLS 1.3).
    if let Ok(tls) = pki.connect_tls(addr, false).await {
        let mut client = MqttClient::new(tls, V5);
        client
            .send(&[Packet::Connect(Box::new(connect_packet(
                V5,
                "GID_t@@@nocert",
                true,
            )))])
            .await;
        let reply = client.receive().await;
        assert!(reply.is_none(), "the broker answered: {reply:?}");
    }
    assert!(!broker.instance.is_connected("GID_t@@@nocert"));

    let tls = pki.connect_tls(addr, true).await.expect("TLS connect");
    let _client = connect_ok(tls, "GID_t@@@cert").await;
    assert!(broker.instance.is_connected("GID_t@@@cert"));
}

#[tokio::test]
async fn stalled_handshake_does_not_block_others() {
    let pki = TestPki::generate();
    let broker = broker(vec![TransportAcceptor::tls(pki.server_config(false))]).await;
    let addr = broker.addrs[0];

    // A client that opens TCP and never starts TLS.
    let _stalled = TcpStream::connect(addr).await.expect("connect");
    let tls = pki.connect_tls(addr, false).await.expect("TLS connect");
    let _client = connect_ok(tls, "GID_t@@@after-stall").await;
}

#[tokio::test]
async fn websocket_frame_carries_two_packets() {
    let broker = broker(vec![TransportAcceptor::websocket(None)]).await;
    let mut ws = open_websocket(broker.addrs[0]).await;

    // CONNECT and SUBSCRIBE in one binary frame.
    let connect = Packet::Connect(Box::new(connect_packet(V5, "GID_t@@@ws-two", true)));
    let subscribe = subscribe_packet(1, &[("sensors/ws", QoS::AtLeastOnce)]);
    let frame = encode_packets(&[connect, subscribe], V5).freeze();
    ws.send(Message::Binary(frame)).await.expect("send");

    // The replies may come in one frame or two; read them as one byte stream.
    let mut client = MqttClient::new(WebSocketByteStream::new(ws), V5);
    match client.receive().await {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    match client.receive().await {
        Some(Packet::SubAck(suback)) => assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_packet_spans_three_frames() {
    let broker = broker(vec![TransportAcceptor::websocket(None)]).await;
    let ws = open_websocket(broker.addrs[0]).await;
    let mut subscriber = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@ws-sub").await;
    subscribe(&mut subscriber, "sensors/split").await;

    let ws = open_websocket(broker.addrs[0]).await;
    let publisher = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@ws-pub").await;
    let publish = publish_packet("sensors/split", QoS::AtLeastOnce, Some(7), b"split payload");
    let bytes = encode_packets(&[Packet::Publish(publish)], V5).freeze();
    let third = bytes.len() / 3;
    let mut ws = publisher.stream.into_inner();
    for part in [
        bytes.slice(..third),
        bytes.slice(third..2 * third),
        bytes.slice(2 * third..),
    ] {
        ws.send(Message::Binary(part)).await.expect("send part");
    }

    expect_publish(&mut subscriber, "sensors/split", b"split payload").await;
    let puback = next_binary(&mut ws).await.expect("PUBACK frame");
    assert_eq!(
        puback.first().map(|b| b >> 4),
        Some(4),
        "PUBACK: {puback:?}"
    );
}

#[tokio::test]
async fn websocket_text_frame_closes_connection() {
    let broker = broker(vec![TransportAcceptor::websocket(None)]).await;
    let mut ws = open_websocket(broker.addrs[0]).await;
    let connect = Packet::Connect(Box::new(connect_packet(V5, "GID_t@@@ws-text", true)));
    ws.send(Message::Binary(encode_packets(&[connect], V5).freeze()))
        .await
        .expect("send CONNECT");
    let connack = next_binary(&mut ws).await.expect("CONNACK frame");
    assert_eq!(connack.first(), Some(&0x20), "CONNACK: {connack:?}");

    ws.send(Message::text("not mqtt")).await.expect("send text");
    // The broker sends no further data: the connection ends with a close frame or EOF.
    assert_eq!(next_binary(&mut ws).await, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while broker.instance.is_connected("GID_t@@@ws-text") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session still connected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn websocket_wrong_path_is_404() {
    let broker = broker(vec![TransportAcceptor::websocket(Some("/mqtt"))]).await;
    let addr = broker.addrs[0];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/wrong");
    match connect_websocket(tcp, &url, &["mqtt"]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 404),
        Err(other) => panic!("expected HTTP 404, got {other}"),
        Ok(_) => panic!("upgrade on a wrong path succeeded"),
    }
}

#[tokio::test]
async fn secure_websocket_reaches_tcp_subscriber() {
    let pki = TestPki::generate();
    let acceptors = vec![
        TransportAcceptor::tcp(),
        TransportAcceptor::secure_websocket(pki.server_config(false), None),
    ];
    let broker = broker(acceptors).await;

    let tcp = TcpStream::connect(broker.addrs[0]).await.expect("connect");
    let mut subscriber = connect_ok(tcp, "GID_t@@@tcp-sub").await;
    subscribe(&mut subscriber, "sensors/wss").await;

    let tls = pki
        .connect_tls(broker.addrs[1], false)
        .await
        .expect("TLS connect");
    let (ws, _) = connect_websocket(tls, "wss://localhost/mqtt", &["mqtt"])
        .await
        .expect("WebSocket upgrade");
    let mut publisher = connect_ok(WebSocketByteStream::new(ws), "GID_t@@@wss-pub").await;
    publish(&mut publisher, "sensors/wss", b"over wss").await;
    expect_publish(&mut subscriber, "sensors/wss", b"over wss").await;

    // And back: the TCP client publishes to a WSS subscriber.
    subscribe(&mut publisher, "sensors/back").await;
    publish(&mut subscriber, "sensors/back", b"to wss").await;
    expect_publish(&mut publisher, "sensors/back", b"to wss").await;
}

/// Junk the lingering-close tests write after the packet that makes the server close: one
/// chunk with that packet, then [`FLOOD_STEPS`] more, 24 KiB in all, below the server's 64 KiB
/// drain limit.
const FLOOD_CHUNK: usize = 2048;
const FLOOD_STEPS: usize = 12;

#[tokio::test]
async fn tls_client_flooding_after_disconnect_reads_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = TestPki::generate();
    let broker = broker(vec![TransportAcceptor::tls(pki.server_config(false))]).await;
    let tls = pki
        .connect_tls(broker.addrs[0], false)
        .await
        .expect("TLS connect");
    let mut client = connect_ok(tls, "GID_t@@@tls-flood").await;

    // A second CONNECT is a protocol error: DISCONNECT 0x82, close_notify, then the close.
    let connect = Packet::Connect(Box::new(connect_packet(V5, "GID_t@@@tls-flood", true)));
    let mut first = encode_packets(&[connect], V5).to_vec();
    first.extend_from_slice(&[0xC0; FLOOD_CHUNK]);
    let mut failed_writes = 0;
    if client.stream.write_all(&first).await.is_err() {
        failed_writes += 1;
    }
    for _ in 0..FLOOD_STEPS {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let write = client.stream.write_all(&[0xC0; FLOOD_CHUNK]).await;
        if write.and(client.stream.flush().await).is_err() {
            failed_writes += 1;
        }
    }
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, client.stream.read_to_end(&mut received)).await;
    assert!(matches!(read, Ok(Ok(_))), "read failed: {read:?}");
    assert_eq!(failed_writes, 0, "the server reset the connection");
    assert_eq!(
        received.first(),
        Some(&0xE0),
        "DISCONNECT, got {received:02x?}"
    );
    assert_eq!(
        received.get(2),
        Some(&0x82),
        "reason code, got {received:02x?}"
    );
}

#[tokio::test]
async fn websocket_client_flooding_after_disconnect_reads_it() {
    let broker = broker(vec![TransportAcceptor::websocket(None)]).await;
    let mut ws = open_websocket(broker.addrs[0]).await;
    let connect = Packet::Connect(Box::new(connect_packet(V5, "GID_t@@@ws-flood", true)));
    let frame = encode_packets(std::slice::from_ref(&connect), V5).freeze();
    ws.send(Message::Binary(frame)).await.expect("send CONNECT");
    let connack = next_binary(&mut ws).await.expect("CONNACK");
    assert_eq!(connack.first(), Some(&0x20), "CONNACK, got {connack:02x?}");

    // A second CONNECT is a protocol error: DISCONNECT 0x82, a Close frame, then the close.
    let mut first = encode_packets(&[connect], V5).to_vec();
    first.extend_from_slice(&[0xC0; FLOOD_CHUNK]);
    let mut failed_writes = 0;
    if ws.send(Message::Binary(first.into())).await.is_err() {
        failed_writes += 1;
    }
    for _ in 0..FLOOD_STEPS {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let junk = Bytes::from_static(&[0xC0; FLOOD_CHUNK]);
        if ws.send(Message::Binary(junk)).await.is_err() {
            failed_writes += 1;
        }
    }
    let disconnect = next_binary(&mut ws).await.expect("DISCONNECT");
    assert_eq!(failed_writes, 0, "the server reset the connection");
    assert_eq!(
        disconnect.first(),
        Some(&0xE0),
        "DISCONNECT, got {disconnect:02x?}"
    );
    assert_eq!(
        disconnect.get(2),
        Some(&0x82),
        "reason code, got {disconnect:02x?}"
    );
    assert_eq!(next_binary(&mut ws).await, None, "the server closed");
}
