//! The lingering close: a client that keeps writing after the server's DISCONNECT or refusing
//! CONNACK still reads those bytes, because the server drains its input before closing instead
//! of resetting the connection on the late writes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{RejectAll, TestBroker, WAIT, connect_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{Packet, ProtocolVersion, encode_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes the client writes in each step of its flood, and the number of steps: 24 KiB in all,
/// below the server's 64 KiB drain limit.
const FLOOD_CHUNK: usize = 2048;
const FLOOD_STEPS: usize = 12;

fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_packet(packet, version, &mut out);
    out.to_vec()
}

/// Writes `trigger` and the first flood chunk in one write, so the server closes with unread
/// input, then keeps writing for a while. Write errors are returned by count, because a reset
/// shows up as one.
async fn flood_after(stream: &mut TcpStream, trigger: &[u8]) -> usize {
    let junk = vec![0xC0; FLOOD_CHUNK];
    let mut first = trigger.to_vec();
    first.extend_from_slice(&junk);
    let mut failed_writes = 0;
    if stream.write_all(&first).await.is_err() {
        failed_writes += 1;
    }
    for _ in 0..FLOOD_STEPS {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if stream.write_all(&junk).await.is_err() {
            failed_writes += 1;
        }
    }
    let _ = stream.shutdown().await;
    failed_writes
}

/// Reads until the server closes, and fails the test on a read error such as a reset.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut received)).await;
    match read {
        Ok(Ok(_)) => received,
        Ok(Err(error)) => panic!("read failed after {} bytes: {error}", received.len()),
        Err(_) => panic!("the server did not close within {WAIT:?}"),
    }
}

#[tokio::test]
async fn flooding_client_reads_disconnect() {
    let broker = TestBroker::start().await;
    let version = ProtocolVersion::V5;
    let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
    let connect = Packet::Connect(Box::new(connect_packet(version, "flood5", true)));
    stream.write_all(&encoded(&connect, version)).await.unwrap();
    let mut connack = [0u8; 64];
    let read = tokio::time::timeout(WAIT, stream.read(&mut connack)).await;
    assert!(matches!(read, Ok(Ok(n)) if n > 0), "no CONNACK: {read:?}");
    assert_eq!(connack[0], 0x20, "CONNACK, got {connack:02x?}");

    // A second CONNECT is a protocol error: DISCONNECT 0x82, then the server closes.
    let failed_writes = flood_after(&mut stream, &encoded(&connect, version)).await;
    let received = read_to_end(&mut stream).await;
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
async fn flooding_client_reads_refusing_connack() {
    let settings = InstanceSettings::new("mqtt-test");
    let broker = TestBroker::start_with(settings, Arc::new(RejectAll)).await;
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
        let connect = Packet::Connect(Box::new(connect_packet(version, "refused", true)));
        let failed_writes = flood_after(&mut stream, &encoded(&connect, version)).await;
        let received = read_to_end(&mut stream).await;
        assert_eq!(
            failed_writes, 0,
            "{version:?}: the server reset the connection"
        );
        // 3.1.1 return code 4 and 5.0 reason code 0x86: bad user name or password.
        let expected: &[u8] = match version {
            ProtocolVersion::V5 => &[0x20, 0x03, 0x00, 0x86, 0x00],
            _ => &[0x20, 0x02, 0x00, 0x04],
        };
        assert_eq!(received, expected, "{version:?}");
    }
}
