//! TransportAcceptor against real TLS and WebSocket clients on 127.0.0.1, with certificates
//! generated for each test.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use switchyard_transport::testing::{CLIENT_COMMON_NAME, TestPki, connect_websocket};
use switchyard_transport::{Accepted, HandshakeError, Transport, TransportAcceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Upper bound for any single wait, so a broken transport fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

/// Accepts one connection on 127.0.0.1 and runs `acceptor` on it.
async fn accept_one(
    acceptor: TransportAcceptor,
) -> (SocketAddr, JoinHandle<Result<Accepted, HandshakeError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.expect("accept");
        acceptor.accept(stream, peer).await
    });
    (addr, task)
}

async fn accepted(task: JoinHandle<Result<Accepted, HandshakeError>>) -> Accepted {
    let joined = tokio::time::timeout(WAIT, task)
        .await
        .expect("handshake ends");
    joined.expect("task").expect("handshake succeeds")
}

async fn failed(task: JoinHandle<Result<Accepted, HandshakeError>>) -> HandshakeError {
    let joined = tokio::time::timeout(WAIT, task)
        .await
        .expect("handshake ends");
    match joined.expect("task") {
        Ok(accepted) => panic!("handshake succeeded: {:?}", accepted.info),
        Err(err) => err,
    }
}

async fn read_exactly(stream: &mut (impl AsyncReadExt + Unpin), len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("bytes arrive in time")
        .expect("read succeeds");
    buf
}

#[tokio::test]
async fn tcp_passes_stream_through() {
    let (addr, task) = accept_one(TransportAcceptor::tcp()).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let mut server = accepted(task).await;
    assert_eq!(server.info.transport, Transport::Tcp);
    assert_eq!(
        server.info.peer,
        client.local_addr().expect("client address")
    );
    assert!(matches!(
        server.stream,
        switchyard_transport::AcceptedStream::Tcp(_)
    ));

    client.write_all(b"ping").await.expect("write");
    assert_eq!(read_exactly(&mut server.stream, 4).await, b"ping");
}

#[tokio::test]
async fn tls_carries_bytes_both_ways() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(false));
    let (addr, task) = accept_one(acceptor).await;
    let mut client = pki.connect_tls(addr, false).await.expect("TLS connect");
    let mut server = accepted(task).await;

    assert_eq!(server.info.transport, Transport::Tls);
    assert_eq!(server.info.server_name.as_deref(), Some("localhost"));
    assert_eq!(server.info.client_certificate, None);

    client.write_all(b"hello").await.expect("client write");
    client.flush().await.expect("client flush");
    assert_eq!(read_exactly(&mut server.stream, 5).await, b"hello");
    server
        .stream
        .write_all(b"world")
        .await
        .expect("server write");
    server.stream.flush().await.expect("server flush");
    assert_eq!(read_exactly(&mut client, 5).await, b"world");
}

#[tokio::test]
async fn tls_ignores_unrequested_client_certificate() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(false));
    let (addr, task) = accept_one(acceptor).await;
    let _client = pki.connect_tls(addr, true).await.expect("TLS connect");
    let server = accepted(task).await;
    assert_eq!(server.info.client_certificate, None);
}

#[tokio::test]
async fn mtls_rejects_client_without_certificate() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(true));
    let (addr, task) = accept_one(acceptor).await;

    // With TLS 1.3 the client finishes its side first and learns of the rejection on its
    // first read, so the connect itself may succeed.
    let client = pki.connect_tls(addr, false).await;
    let err = failed(task).await;
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
    if let Ok(mut client) = client {
        let mut buf = [0; 1];
        let read = tokio::time::timeout(WAIT, client.read(&mut buf))
            .await
            .expect("read ends");
        assert!(!matches!(read, Ok(1)), "the server sent data: {read:?}");
    }
}

#[tokio::test]
async fn mtls_reports_client_certificate() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(true));
    let (addr, task) = accept_one(acceptor).await;
    let mut client = pki.connect_tls(addr, true).await.expect("TLS connect");
    let mut server = accepted(task).await;

    let certificate = server
        .info
        .client_certificate
        .clone()
        .expect("client certificate is reported");
    assert_eq!(certificate.common_name.as_deref(), Some(CLIENT_COMMON_NAME));
    assert!(
        certificate.subject.contains(CLIENT_COMMON_NAME),
        "{}",
        certificate.subject
    );
    assert!(
        certificate.subject.contains("Switchyard tests"),
        "{}",
        certificate.subject
    );
    let expected = hex::encode(Sha256::digest(certificate.der.as_ref()));
    assert_eq!(certificate.sha256_fingerprint, expected);
    assert_eq!(certificate.sha256_fingerprint.len(), 64);

    client.write_all(b"ok").await.expect("client write");
    client.flush().await.expect("client flush");
    assert_eq!(read_exactly(&mut server.stream, 2).await, b"ok");
}

#[tokio::test]
async fn mtls_rejects_certificate_of_other_ca() {
    let pki = TestPki::generate();
    let stranger = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(true));
    let (addr, task) = accept_one(acceptor).await;

    // The stranger's client certificate, on a client that trusts the server's CA.
    let mut mixed = stranger.clone();
    mixed.ca_certificate = pki.ca_certificate.clone();
    let _client = mixed.connect_tls(addr, true).await;
    let err = failed(task).await;
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
}

#[tokio::test]
async fn tls_handshake_times_out() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(false))
        .with_handshake_timeout(Duration::from_millis(200));
    let (addr, task) = accept_one(acceptor).await;
    let _silent = TcpStream::connect(addr).await.expect("connect");
    let err = failed(task).await;
    assert!(
        matches!(
            err,
            HandshakeError::TimedOut {
                transport: Transport::Tls,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tls_rejects_plain_mqtt() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::tls(pki.server_config(false));
    let (addr, task) = accept_one(acceptor).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    // The start of an MQTT CONNECT, which is no TLS record.
    client
        .write_all(&[0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02])
        .await
        .expect("write");
    let err = failed(task).await;
    assert!(matches!(err, HandshakeError::Tls(_)), "{err}");
}

#[tokio::test]
async fn websocket_answers_mqtt_subprotocol() {
    for (offered, expected) in [
        (&["mqtt"][..], "mqtt"),
        (&["mqttv3.1"][..], "mqttv3.1"),
        (&["mqttv3.1", "mqtt"][..], "mqtt"),
    ] {
        let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/mqtt");
        let (_ws, response) = connect_websocket(tcp, &url, offered)
            .await
            .expect("upgrade succeeds");
        let answered = response.headers().get(SEC_WEBSOCKET_PROTOCOL);
        assert_eq!(
            answered.and_then(|value| value.to_str().ok()),
            Some(expected),
            "offered {offered:?}"
        );
        let server = accepted(task).await;
        assert_eq!(server.info.transport, Transport::Ws);
        assert_eq!(server.info.websocket_subprotocol, Some(expected));
    }
}

#[tokio::test]
async fn websocket_serves_configured_path() {
    let acceptor = TransportAcceptor::websocket(Some("/devices"));
    let (addr, task) = accept_one(acceptor).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/devices?client=1");
    connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade succeeds");
    accepted(task).await;
}

#[tokio::test]
async fn websocket_wrong_path_gets_404() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/other");
    let err = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect_err("upgrade is rejected");
    match err {
        WsError::Http(response) => {
            assert_eq!(response.status(), 404);
            let body = response.body().clone().unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("/mqtt"), "{body}");
        }
        other => panic!("expected HTTP 404, got {other}"),
    }
    let err = failed(task).await;
    assert!(matches!(err, HandshakeError::WebSocket(_)), "{err}");
}

#[tokio::test]
async fn websocket_without_subprotocol_gets_400() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let err = connect_websocket(tcp, &url, &[])
        .await
        .expect_err("upgrade is rejected");
    match err {
        WsError::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected HTTP 400, got {other}"),
    }
    failed(task).await;
}

#[tokio::test]
async fn websocket_rejects_plain_http() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let err = failed(task).await;
    assert!(matches!(err, HandshakeError::WebSocket(_)), "{err}");
}

#[tokio::test]
async fn websocket_frames_become_byte_stream() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (mut ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut server = accepted(task).await;

    // Two messages' worth in one frame, then one piece of data over three frames.
    ws.send(Message::binary(b"firstsecond".to_vec()))
        .await
        .expect("send");
    for part in [&b"sp"[..], b"li", b"t!"] {
        ws.send(Message::binary(part.to_vec())).await.expect("send");
    }
    assert_eq!(read_exactly(&mut server.stream, 5).await, b"first");
    assert_eq!(read_exactly(&mut server.stream, 6).await, b"second");
    assert_eq!(read_exactly(&mut server.stream, 6).await, b"split!");

    // Each write, vectored ones included, arrives as one binary message.
    server.stream.write_all(b"reply").await.expect("write");
    server.stream.flush().await.expect("flush");
    let slices = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
    let written = server.stream.write_vectored(&slices).await.expect("write");
    assert_eq!(written, 4);
    server.stream.flush().await.expect("flush");
    for expected in [&b"reply"[..], b"abcd"] {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message arrives")
            .expect("stream open")
            .expect("valid message");
        assert_eq!(message, Message::binary(expected.to_vec()));
    }
}

#[tokio::test]
async fn websocket_answers_ping_while_reading() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (mut ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut server = accepted(task).await;
    let reader = tokio::spawn(async move { read_exactly(&mut server.stream, 4).await });

    ws.send(Message::Ping(b"beat".to_vec().into()))
        .await
        .expect("send ping");
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("pong arrives")
        .expect("stream open")
        .expect("valid message");
    assert_eq!(pong, Message::Pong(b"beat".to_vec().into()));

    ws.send(Message::binary(b"data".to_vec()))
        .await
        .expect("send");
    assert_eq!(reader.await.expect("reader task"), b"data");
}

#[tokio::test]
async fn websocket_text_frame_closes() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (mut ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut server = accepted(task).await;

    ws.send(Message::text("hello")).await.expect("send text");
    let mut buf = [0; 16];
    let read = tokio::time::timeout(WAIT, server.stream.read(&mut buf))
        .await
        .expect("read ends");
    let err = read.expect_err("a text frame fails the read");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);

    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("close arrives")
        .expect("stream open")
        .expect("valid message");
    match close {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_close_reads_as_end() {
    let (addr, task) = accept_one(TransportAcceptor::websocket(None)).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (mut ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut server = accepted(task).await;

    ws.send(Message::binary(b"last".to_vec()))
        .await
        .expect("send");
    ws.close(None).await.expect("close");
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, server.stream.read_to_end(&mut received))
        .await
        .expect("stream ends")
        .expect("clean end of stream");
    assert_eq!(received, b"last");
}

#[tokio::test]
async fn websocket_rejects_oversized_message() {
    let acceptor = TransportAcceptor::websocket(None).with_max_websocket_message_size(1024);
    let (addr, task) = accept_one(acceptor).await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/mqtt");
    let (mut ws, _) = connect_websocket(tcp, &url, &["mqtt"])
        .await
        .expect("upgrade");
    let mut server = accepted(task).await;

    ws.send(Message::binary(vec![0; 2048])).await.expect("send");
    let mut buf = [0; 16];
    let read = tokio::time::timeout(WAIT, server.stream.read(&mut buf))
        .await
        .expect("read ends");
    assert!(read.is_err(), "an oversized message was read: {read:?}");
}

#[tokio::test]
async fn secure_websocket_reports_tls_and_subprotocol() {
    let pki = TestPki::generate();
    let acceptor = TransportAcceptor::secure_websocket(pki.server_config(true), None);
    let (addr, task) = accept_one(acceptor).await;
    let tls = pki.connect_tls(addr, true).await.expect("TLS connect");
    let (mut ws, response) = connect_websocket(tls, "wss://localhost/mqtt", &["mqtt"])
        .await
        .expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.as_bytes()),
        Some(&b"mqtt"[..])
    );
    let mut server = accepted(task).await;

    assert_eq!(server.info.transport, Transport::Wss);
    assert_eq!(server.info.websocket_subprotocol, Some("mqtt"));
    let certificate = server
        .info
        .client_certificate
        .as_ref()
        .expect("certificate");
    assert_eq!(certificate.common_name.as_deref(), Some(CLIENT_COMMON_NAME));

    ws.send(Message::binary(b"secure".to_vec()))
        .await
        .expect("send");
    assert_eq!(read_exactly(&mut server.stream, 6).await, b"secure");
}
