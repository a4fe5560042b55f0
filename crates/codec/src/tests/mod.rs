//! Tests that exercise the decoder and the encoder through the public entry points.

mod reject;
mod reject_connect;
mod roundtrip;
mod short_forms;
mod strategies;
mod stream;

use bytes::BytesMut;

use crate::{DecodeError, Packet, ProtocolVersion, decode_packet};

/// Returns the proptest case count: `PROPTEST_CASES` when set (for long fuzzing runs), otherwise
/// `default`.
fn case_count(default: u32) -> u32 {
    let configured = std::env::var("PROPTEST_CASES").ok();
    configured
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Decodes `bytes` as one packet of a connection of `version`, with no size limit.
fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode_packet(&mut BytesMut::from(bytes), version, u32::MAX)
}

/// Decodes `bytes`, expecting one complete packet.
#[track_caller]
fn decode_ok(bytes: &[u8], version: ProtocolVersion) -> Packet {
    match decode(bytes, version) {
        Ok(Some(packet)) => packet,
        other => panic!("expected a packet from {bytes:02X?}, got {other:?}"),
    }
}

/// Decodes `bytes`, expecting an error.
#[track_caller]
fn decode_err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    match decode(bytes, version) {
        Err(error) => error,
        other => panic!("expected an error from {bytes:02X?}, got {other:?}"),
    }
}
