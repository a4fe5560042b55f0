//! Connection handling of `ApiServer::serve` over real TCP: the header, request and idle
//! timeouts, the `max_connections` cap and shutdown. Every wait has an upper bound, and the
//! checks that something does not happen wait a fixed time well inside the configured limits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    DOWNGRADE_FORM, RecordingBackend, TestServer, accounts, assert_error, assert_success,
    http_head, read_response, read_until_closed, root_key, send_raw_to, to_http,
    to_http_keep_alive,
};
use switchyard_api::{ApiServer, ApiSettings, ConfigError, ManualClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

fn settings(header_read: Duration, request: Duration, idle: Duration) -> ApiSettings {
    ApiSettings {
        header_read_timeout: header_read,
        request_timeout: request,
        idle_timeout: idle,
        ..ApiSettings::default()
    }
}

/// Returns whether `stream` stays silent and open for `wait`: no byte, no close.
async fn stays_silent(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(wait, stream.read(&mut byte))
        .await
        .is_err()
}

/// Polls until the backend has recorded `count` calls, for at most 5 s.
async fn wait_for_calls(backend: &RecordingBackend, count: usize) {
    for _ in 0..500 {
        if backend.calls().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the backend did not receive {count} calls within 5 s");
}

#[tokio::test]
async fn silent_connection_closed_after_header_timeout() {
    let server = TestServer::with_settings(settings(SHORT, LONG, LONG)).await;
    let mut stream = server.connect().await;

    let received = read_until_closed(&mut stream).await;

    assert!(received.is_empty(), "no response to a request never sent");
}

#[tokio::test]
async fn partial_headers_closed_after_header_timeout() {
    let server = TestServer::with_settings(settings(SHORT, LONG, LONG)).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: applic")
        .await
        .expect("write a partial head");

    let received = read_until_closed(&mut stream).await;

    assert!(received.is_empty(), "no response to an incomplete head");
    assert_success(
        &server
            .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
            .await,
    );
}

#[tokio::test]
async fn partial_body_gets_408_and_close() {
    let server = TestServer::with_settings(settings(LONG, SHORT, LONG)).await;
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let mut bytes = http_head(&request, "");
    bytes.extend_from_slice(&request.body[..request.body.len() / 2]);
    let mut stream = server.connect().await;
    stream
        .write_all(&bytes)
        .await
        .expect("write a partial body");

    let reply = read_response(&mut stream).await;
    let after_reply = read_until_closed(&mut stream).await;

    assert_error(&reply, 408, "RequestTimeout");
    assert!(
        reply.message().contains("request_timeout"),
        "{}",
        reply.message()
    );
    assert!(reply.body["RequestId"].is_string());
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(after_reply.is_empty(), "nothing follows the 408");
    assert!(server.backend.calls().is_empty());
}

#[tokio::test]
async fn slow_backend_gets_503() {
    let server = TestServer::with_settings(settings(LONG, SHORT, LONG)).await;
    server.backend.delay_calls(Duration::from_secs(60));
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);

    let reply = server.send(&request).await;

    assert_error(&reply, 503, "ServiceUnavailable");
    assert!(
        reply.message().contains("request_timeout"),
        "{}",
        reply.message()
    );
    assert_eq!(server.backend.calls().len(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connection_closed() {
    let server = TestServer::with_settings(settings(LONG, LONG, SHORT)).await;
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let mut stream = server.connect().await;
    stream
        .write_all(&to_http_keep_alive(&request))
        .await
        .expect("write a request");

    let reply = read_response(&mut stream).await;
    let after_reply = read_until_closed(&mut stream).await;

    assert_success(&reply);
    assert!(after_reply.is_empty(), "nothing follows the response");
}

#[tokio::test]
async fn keep_alive_outlives_header_timeout() {
    let server = TestServer::with_settings(settings(SHORT, LONG, LONG)).await;
    let mut stream = server.connect().await;
    let first = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    stream
        .write_all(&to_http_keep_alive(&first))
        .await
        .expect("write the first request");
    assert_success(&read_response(&mut stream).await);

    // Idle for twice the header timeout; only idle_timeout applies between requests.
    tokio::time::sleep(SHORT * 2).await;
    let second = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    stream
        .write_all(&to_http_keep_alive(&second))
        .await
        .expect("write the second request");

    assert_success(&read_response(&mut stream).await);
    assert_eq!(server.backend.calls().len(), 2);
}

#[tokio::test]
async fn second_partial_head_closed_after_header_timeout() {
    let server = TestServer::with_settings(settings(SHORT, LONG, LONG)).await;
    let mut stream = server.connect().await;
    let first = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    stream
        .write_all(&to_http_keep_alive(&first))
        .await
        .expect("write the first request");
    assert_success(&read_response(&mut stream).await);

    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .expect("write a partial second head");
    let received = read_until_closed(&mut stream).await;

    assert!(received.is_empty(), "no response to an incomplete head");
}

#[tokio::test]
async fn signed_request_served_beside_slow_clients() {
    let server = TestServer::with_settings(settings(LONG, LONG, LONG)).await;
    let silent = server.connect().await;
    let mut partial_head = server.connect().await;
    partial_head
        .write_all(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .expect("write a partial head");
    let slow = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let mut partial_body = server.connect().await;
    let mut bytes = http_head(&slow, "");
    bytes.extend_from_slice(&slow.body[..slow.body.len() / 2]);
    partial_body
        .write_all(&bytes)
        .await
        .expect("write a partial body");

    let reply = server
        .send(&server.hmac(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;

    assert_success(&reply);
    assert_eq!(server.backend.calls().len(), 1);
    drop((silent, partial_head, partial_body));
}

#[tokio::test]
async fn connection_cap_holds_extra_client() {
    let settings = ApiSettings {
        max_connections: 2,
        ..settings(LONG, LONG, LONG)
    };
    let server = TestServer::with_settings(settings).await;
    // The kernel hands connections to accept() in arrival order, so these two take the slots.
    let holders = [server.connect().await, server.connect().await];
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let mut extra = server.connect().await;
    extra
        .write_all(&to_http(&request))
        .await
        .expect("write a request");

    let served_while_full = !stays_silent(&mut extra, Duration::from_millis(500)).await;
    assert!(!served_while_full, "the extra connection waits for a slot");
    assert!(server.backend.calls().is_empty());

    drop(holders);
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut received))
        .await
        .expect("the extra connection is served within 10 s of the slots freeing")
        .expect("the extra connection reads its response");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    let next = server
        .send(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM))
        .await;
    assert_success(&next);
    assert_eq!(server.backend.calls().len(), 2);
}

#[tokio::test]
async fn shutdown_closes_idle_connections() {
    let server = TestServer::with_settings(settings(LONG, LONG, LONG)).await;
    let addr = server.addr;
    let mut silent = server.connect().await;
    let mut partial_head = server.connect().await;
    partial_head
        .write_all(b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .expect("write a partial head");
    let mut kept_alive = server.connect().await;
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    kept_alive
        .write_all(&to_http_keep_alive(&request))
        .await
        .expect("write a request");
    assert_success(&read_response(&mut kept_alive).await);

    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown completes within 5 s");

    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert!(read_until_closed(&mut partial_head).await.is_empty());
    assert!(read_until_closed(&mut kept_alive).await.is_empty());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn shutdown_finishes_request_in_flight() {
    let server = TestServer::with_settings(settings(LONG, LONG, LONG)).await;
    server.backend.delay_calls(Duration::from_millis(500));
    let bytes = to_http(&server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM));
    let addr = server.addr;
    let in_flight = tokio::spawn(async move { send_raw_to(addr, &bytes).await });
    wait_for_calls(&server.backend, 1).await;

    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("shutdown completes within 10 s");
    let reply = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the request in flight ends within 10 s")
        .expect("the request task completes");

    assert!(stopped.is_ok(), "{stopped:?}");
    assert_success(&reply);
}

#[tokio::test]
async fn shutdown_bounded_by_request_timeout() {
    let server = TestServer::with_settings(settings(LONG, SHORT, LONG)).await;
    server.backend.delay_calls(Duration::from_secs(60));
    let request = server.acs3(&root_key(), "DisasterDowngrade", DOWNGRADE_FORM);
    let mut stream = server.connect().await;
    stream
        .write_all(&to_http(&request))
        .await
        .expect("write a request");
    wait_for_calls(&server.backend, 1).await;

    let stopped = tokio::time::timeout(Duration::from_secs(5), server.stop())
        .await
        .expect("shutdown completes within 5 s despite a 60 s backend call");
    let received = read_until_closed(&mut stream).await;

    assert!(stopped.is_ok(), "{stopped:?}");
    // The request ends with its 503, or is cut off if the shutdown bound comes first.
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 503"),
        "{text}"
    );
}

#[tokio::test]
async fn invalid_connection_settings_rejected() {
    let cases = [
        (
            ApiSettings {
                max_connections: 0,
                ..ApiSettings::default()
            },
            ConfigError::ZeroSetting {
                name: "max_connections",
            },
        ),
        (
            ApiSettings {
                max_connections: usize::MAX,
                ..ApiSettings::default()
            },
            ConfigError::SettingTooLarge {
                name: "max_connections",
                value: usize::MAX,
                max: tokio::sync::Semaphore::MAX_PERMITS,
            },
        ),
        (
            ApiSettings {
                header_read_timeout: Duration::ZERO,
                ..ApiSettings::default()
            },
            ConfigError::ZeroTimeout {
                name: "header_read_timeout",
            },
        ),
        (
            ApiSettings {
                request_timeout: Duration::ZERO,
                ..ApiSettings::default()
            },
            ConfigError::ZeroTimeout {
                name: "request_timeout",
            },
        ),
        (
            ApiSettings {
                idle_timeout: Duration::ZERO,
                ..ApiSettings::default()
            },
            ConfigError::ZeroTimeout {
                name: "idle_timeout",
            },
        ),
    ];
    for (settings, expected) in cases {
        let result = ApiServer::new(
            accounts(),
            settings,
            Arc::new(RecordingBackend::default()),
            Arc::new(ManualClock::new(common::NOW)),
        );
        assert_eq!(result.err(), Some(expected));
    }
}
