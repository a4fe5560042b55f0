//! Reading the CONNECT packet of a new connection and the CONNACK that rejects one.
//!
//! Region listeners and the DR global endpoint both call [`read_connect`] before they know which
//! instance takes the connection, so it depends on no instance state.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_codec::{
    ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion, ReasonCode, decode_connect,
    encode_packet,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The failure of [`read_connect`] to return a CONNECT.
#[derive(Debug, thiserror::Error)]
pub enum ReadConnectError {
    /// No whole CONNECT arrived within the deadline.
    #[error("timed out after {timeout:?} waiting for CONNECT ({received} bytes received)")]
    TimedOut { timeout: Duration, received: usize },
    /// The peer closed the connection before a whole CONNECT arrived.
    #[error("connection closed before a whole CONNECT arrived ({received} bytes received)")]
    Closed { received: usize },
    /// Reading from the stream failed.
    #[error("failed to read CONNECT: {0}")]
    Io(#[source] io::Error),
    /// The first packet is not a valid CONNECT; the error carries the reason code it calls for
    /// and, once the protocol level was read, the version of the CONNACK.
    #[error("invalid CONNECT: {0}")]
    Decode(DecodeError),
}

impl ReadConnectError {
    /// Returns the version and reason code of the CONNACK to send before closing, or `None` when the connection should
    /// close without one.
    ///
    /// Only errors whose protocol version is known get a CONNACK. A 5.0 client gets the reason
    /// code of the error, which the server may send for any invalid CONNECT (5.0 section
    /// 3.2.2.2). A 3.x client gets one only for an unsupported protocol level, as return code 1
    /// [MQTT-3.1.2-2 in 3.1.1], because 3.x has no return codes for the other errors.
    pub fn refusal(&self) -> Option<(ProtocolVersion, ReasonCode)> {
        let ReadConnectError::Decode(error) = self else {
            return None;
        };
        let version = error.connect_version?;
        let reason = error.reason_code();
        if version.is_v5() || reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
            Some((version, reason))
        } else {
            None
        }
    }
}

/// Reads from `stream` until one CONNECT is decoded, within `timeout` and accepting at most
/// `max_size` bytes for the packet.
///
/// Returns the CONNECT and the bytes read after it, which belong to the next packets and must be
/// handed to the connection as they are.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
    max_size: u32,
) -> Result<(Connect, BytesMut), ReadConnectError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let read = tokio::time::timeout(timeout, read_connect_into(stream, &mut buf, max_size)).await;
    match read {
        Ok(Ok(connect)) => Ok((connect, buf)),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Err(ReadConnectError::TimedOut {
            timeout,
            received: buf.len(),
        }),
    }
}

/// Sends a CONNACK that rejects the connection with `reason`, given as a 5.0 reason code, and
/// flushes it. The codec writes the matching 3.1.1 return code for older clients.
pub async fn write_connack_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: ProtocolVersion,
    reason: ReasonCode,
) -> io::Result<()> {
    let connack = ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    };
    let mut out = BytesMut::new();
    encode_packet(&Packet::ConnAck(connack), version, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Bytes read per call; the buffer grows in steps of this size while a packet is incomplete.
pub(crate) const READ_CHUNK: usize = 4096;

async fn read_connect_into<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_size: u32,
) -> Result<Connect, ReadConnectError> {
    loop {
        if let Some(connect) = decode_connect(buf, max_size).map_err(ReadConnectError::Decode)? {
            return Ok(connect);
        }
        buf.reserve(READ_CHUNK);
        let read = stream.read_buf(buf).await.map_err(ReadConnectError::Io)?;
        if read == 0 {
            return Err(ReadConnectError::Closed {
                received: buf.len(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_error(reason: ReasonCode, version: Option<ProtocolVersion>) -> ReadConnectError {
        let mut error = DecodeError::new(reason, "test");
        error.connect_version = version;
        ReadConnectError::Decode(error)
    }

    #[test]
    fn refusal_answers_v5_errors_with_their_reason() {
        let error = decode_error(ReasonCode::MALFORMED_PACKET, Some(ProtocolVersion::V5));
        assert_eq!(
            error.refusal(),
            Some((ProtocolVersion::V5, ReasonCode::MALFORMED_PACKET))
        );
    }

    #[test]
    fn refusal_answers_unsupported_level_in_3x() {
        let reason = ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
        let error = decode_error(reason, Some(ProtocolVersion::V3_1_1));
        assert_eq!(error.refusal(), Some((ProtocolVersion::V3_1_1, reason)));
    }

    #[test]
    fn refusal_closes_other_3x_errors_and_unknown_versions() {
        let malformed = decode_error(ReasonCode::MALFORMED_PACKET, Some(ProtocolVersion::V3_1_1));
        assert_eq!(malformed.refusal(), None);
        let no_version = decode_error(ReasonCode::PROTOCOL_ERROR, None);
        assert_eq!(no_version.refusal(), None);
        assert_eq!(ReadConnectError::Closed { received: 3 }.refusal(), None);
    }

    #[test]
    fn errors_display_what_happened() {
        let timed_out = ReadConnectError::TimedOut {
            timeout: Duration::from_secs(10),
            received: 4,
        };
        assert_eq!(
            timed_out.to_string(),
            "timed out after 10s waiting for CONNECT (4 bytes received)"
        );
        assert_eq!(
            ReadConnectError::Closed { received: 0 }.to_string(),
            "connection closed before a whole CONNECT arrived (0 bytes received)"
        );
        let decode = decode_error(ReasonCode::MALFORMED_PACKET, None);
        assert_eq!(
            decode.to_string(),
            "invalid CONNECT: test (reason code 0x81)"
        );
    }

    #[tokio::test]
    async fn read_connect_returns_bytes_after_connect() {
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 30,
            client_id: "device".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        };
        let mut wire = BytesMut::new();
        encode_packet(
            &Packet::Connect(Box::new(connect.clone())),
            connect.protocol,
            &mut wire,
        );
        encode_packet(&Packet::PingReq, connect.protocol, &mut wire);

        let mut stream: &[u8] = &wire;
        let (decoded, rest) = read_connect(&mut stream, Duration::from_secs(5), 1024)
            .await
            .expect("CONNECT");
        assert_eq!(decoded, connect);
        assert_eq!(&rest[..], &[0xC0, 0x00]);
    }

    #[tokio::test]
    async fn read_connect_reports_early_close() {
        let mut stream: &[u8] = &[0x10, 0x0C, 0x00];
        let error = read_connect(&mut stream, Duration::from_secs(5), 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ReadConnectError::Closed { received: 3 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn read_connect_rejects_oversized_packet() {
        let mut stream: &[u8] = &[0x10, 0xFF, 0x7F];
        let error = read_connect(&mut stream, Duration::from_secs(5), 1024)
            .await
            .unwrap_err();
        let ReadConnectError::Decode(decode) = error else {
            panic!("expected a decode error, got {error:?}");
        };
        assert_eq!(decode.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn read_connect_times_out() {
        let (mut client, _server) = tokio::io::duplex(64);
        let error = read_connect(&mut client, Duration::from_secs(10), 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ReadConnectError::TimedOut { received: 0, .. }),
            "{error:?}"
        );
    }
}
