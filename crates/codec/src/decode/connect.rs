//! CONNECT and CONNACK bodies.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::packet::{ConnAck, Connect, ProtocolVersion, QoS, ReasonCode, Will};
use crate::properties::{self, PropertyContext};
use crate::reader::Reader;
use crate::topic;

/// Reason codes a 5.0 CONNACK may carry (5.0 section 3.2.2.2).
pub(crate) const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN_START: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

/// Decodes a CONNECT body. Errors raised after the protocol level was read carry the version.
pub(super) fn decode_connect(body: Bytes) -> Result<Connect, DecodeError> {
    let mut reader = Reader::new(body);
    let version = read_protocol_version(&mut reader)?;
    decode_connect_after_version(&mut reader, version)
        .map_err(|error| error.with_connect_version(version))
}

/// Reads protocol name and level: `MQIsdp` 3, `MQTT` 4 or `MQTT` 5.
fn read_protocol_version(reader: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = reader.read_string("CONNECT protocol name")?;
    let level = reader.read_u8("CONNECT protocol level")?;
    // For an unknown level, `connect_version` picks the CONNACK layout the client most likely
    // reads: 3.x return code 1 for `MQIsdp` and for `MQTT` below 5, reason 0x84 above 5.
    let (version, known) = match (name.as_str(), level) {
        ("MQIsdp", 3) => (ProtocolVersion::V3_1, true),
        ("MQTT", 4) => (ProtocolVersion::V3_1_1, true),
        ("MQTT", 5) => (ProtocolVersion::V5, true),
        ("MQIsdp", _) => (ProtocolVersion::V3_1, false),
        ("MQTT", 0..=4) => (ProtocolVersion::V3_1_1, false),
        ("MQTT", _) => (ProtocolVersion::V5, false),
        _ => {
            // [MQTT-3.1.2-1]: the server must not go on treating the connection as MQTT.
            return Err(DecodeError::protocol_error(format!(
                "CONNECT protocol name {:?} is neither MQTT nor MQIsdp",
                name.as_str()
            )));
        }
    };
    if !known {
        // [MQTT-3.1.2-2]: CONNACK 0x84 (3.1.1 return code 1), then close.
        let error = DecodeError::new(
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            format!("CONNECT protocol level {level} is not supported for protocol name {name}"),
        );
        return Err(error.with_connect_version(version));
    }
    Ok(version)
}

fn decode_connect_after_version(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Connect, DecodeError> {
    let flags = reader.read_u8("CONNECT flags")?;
    // [MQTT-3.1.2-3]: the reserved flag must be 0.
    if flags & FLAG_RESERVED != 0 {
        return Err(DecodeError::malformed(
            "CONNECT reserved flag (bit 0) is set",
        ));
    }
    let has_will = flags & FLAG_WILL != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & FLAG_WILL_RETAIN != 0;
    let has_password = flags & FLAG_PASSWORD != 0;
    let has_username = flags & FLAG_USERNAME != 0;
    if !has_will && (will_qos != 0 || will_retain) {
        // [MQTT-3.1.2-11], [MQTT-3.1.2-13] in 5.0; [MQTT-3.1.2-13], [MQTT-3.1.2-15] in 3.1.1.
        return Err(DecodeError::malformed(
            "CONNECT has Will QoS or Will Retain set without the Will Flag",
        ));
    }
    let Some(will_qos) = QoS::from_u8(will_qos) else {
        // [MQTT-3.1.2-12] in 5.0, [MQTT-3.1.2-14] in 3.1.1.
        return Err(DecodeError::malformed("CONNECT has Will QoS 3"));
    };
    if has_password && !has_username && !version.is_v5() {
        // [MQTT-3.1.2-22] in 3.1.1; 5.0 dropped the rule.
        // NOTE: applied to MQTT 3.1 too, without checking the 3.1 text for the same rule.
        return Err(DecodeError::malformed(
            "CONNECT has the Password Flag set without the User Name Flag",
        ));
    }
    let keep_alive = reader.read_u16("CONNECT keep alive")?;
    let properties = if version.is_v5() {
        properties::decode(reader, PropertyContext::Connect)?
    } else {
        Default::default()
    };

    // [MQTT-3.1.3-4]: the client identifier is a UTF-8 string. Length and characters are checked
    // by the broker, which may reject it with 0x85.
    let client_id = reader.read_string("CONNECT client identifier")?;
    let will = if has_will {
        let will_properties = if version.is_v5() {
            properties::decode(reader, PropertyContext::Will)?
        } else {
            Default::default()
        };
        let topic = reader.read_string("CONNECT will topic")?;
        if let Err(error) = topic::validate_topic_name(&topic) {
            return Err(DecodeError::new(
                ReasonCode::TOPIC_NAME_INVALID,
                format!(
                    "CONNECT will topic {:?} is invalid: {error}",
                    topic.as_str()
                ),
            ));
        }
        let payload = reader.read_binary("CONNECT will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(reader.read_string("CONNECT user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(reader.read_binary("CONNECT password")?)
    } else {
        None
    };
    reader.expect_end("CONNECT")?;

    Ok(Connect {
        protocol: version,
        clean_start: flags & FLAG_CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Decodes a CONNACK body. 3.x return codes are mapped to the matching 5.0 reason codes.
pub(super) fn decode_connack(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let ack_flags = reader.read_u8("CONNACK acknowledge flags")?;
    if ack_flags & 0xFE != 0 {
        // [MQTT-3.2.2-1] in 5.0; reserved in 3.1.1 as well.
        return Err(DecodeError::malformed(
            "CONNACK reserved acknowledge flags are set",
        ));
    }
    let session_present = ack_flags & 0x01 != 0;
    let (reason, properties) = if version.is_v5() {
        let reason = super::read_reason(reader, "CONNACK", CONNACK_REASONS)?;
        (
            reason,
            properties::decode(reader, PropertyContext::ConnAck)?,
        )
    } else {
        let code = reader.read_u8("CONNACK return code")?;
        let Some(reason) = reason_from_return_code(code) else {
            return Err(DecodeError::protocol_error(format!(
                "CONNACK return code {code} is reserved"
            )));
        };
        (reason, Default::default())
    };
    if session_present && reason.is_error() {
        // [MQTT-3.2.2-6] in 5.0, [MQTT-3.2.2-4] in 3.1.1.
        return Err(DecodeError::protocol_error(
            "CONNACK has Session Present set with a failure code",
        ));
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

/// Maps a 3.1.1 CONNACK return code to a 5.0 reason code; the encoder maps them back.
fn reason_from_return_code(code: u8) -> Option<ReasonCode> {
    match code {
        0 => Some(ReasonCode::SUCCESS),
        1 => Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        2 => Some(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        3 => Some(ReasonCode::SERVER_UNAVAILABLE),
        4 => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        5 => Some(ReasonCode::NOT_AUTHORIZED),
        _ => None,
    }
}
