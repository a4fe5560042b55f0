//! Decoding errors, each carrying the MQTT 5.0 reason code that the violation calls for.
//!
//! The broker sends that code in a CONNACK (for CONNECT) or a DISCONNECT (for later packets) to
//! 5.0 clients. 3.x has no way to report these errors, so the broker closes the connection
//! without CONNACK [MQTT-3.1.4-1 in 3.1.1]. The exception is 0x84 Unsupported Protocol Version,
//! for which 3.x sends CONNACK return code 1 [MQTT-3.1.2-2 in 3.1.1].

use crate::packet::{ProtocolVersion, ReasonCode};

/// Error from decoding a packet, with the reason code to report it with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail} (reason code 0x{:02X})", reason.0)]
pub struct DecodeError {
    /// Reason code for the violation: 0x81 Malformed Packet, 0x82 Protocol Error, 0x84
    /// Unsupported Protocol Version, 0x90 Topic Name Invalid, 0x94 Topic Alias Invalid or 0x95
    /// Packet Too Large.
    pub reason: ReasonCode,
    /// Human-readable description naming the field that failed.
    pub detail: String,
    /// For CONNECT errors, the protocol version if it had been read before the error, so the
    /// broker can send a CONNACK of that version. `None` for every other packet.
    pub connect_version: Option<ProtocolVersion>,
}

impl DecodeError {
    /// Builds an error with the given reason code and no CONNECT version.
    pub fn new(reason: ReasonCode, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            reason,
            detail: detail.into(),
            connect_version: None,
        }
    }

    /// Builds a 0x81 Malformed Packet error: the bytes cannot be parsed as the packet type.
    pub fn malformed(detail: impl Into<String>) -> DecodeError {
        DecodeError::new(ReasonCode::MALFORMED_PACKET, detail)
    }

    /// Builds a 0x82 Protocol Error: the packet parses but breaks a rule of the protocol.
    pub fn protocol_error(detail: impl Into<String>) -> DecodeError {
        DecodeError::new(ReasonCode::PROTOCOL_ERROR, detail)
    }

    /// Returns the reason code the violation calls for (0x81, 0x82, 0x84, 0x90, 0x94, 0x95).
    pub fn reason_code(&self) -> ReasonCode {
        self.reason
    }

    /// Reports whether the error is 0x81 Malformed Packet.
    pub fn is_malformed(&self) -> bool {
        self.reason == ReasonCode::MALFORMED_PACKET
    }

    /// Returns the error with `detail` prefixed by the packet or field it occurred in.
    pub(crate) fn within(mut self, context: &str) -> DecodeError {
        self.detail = format!("{context}: {}", self.detail);
        self
    }

    /// Returns the error with `connect_version` set, unless it was already set.
    pub(crate) fn with_connect_version(mut self, version: ProtocolVersion) -> DecodeError {
        self.connect_version.get_or_insert(version);
        self
    }
}
