//! Packet framing and decoding.
//!
//! Both entry points first read the fixed header. They reject bad flags and oversized packets as
//! soon as the header is complete, before the body arrives, and return `Ok(None)` without
//! touching the buffer while the packet is incomplete. A complete packet is split off the buffer
//! and frozen, so topics and payloads are shared slices of the read buffer.
//!
//! Each packet body is read through a [`Reader`] limited to that packet, so a length field that
//! points past the packet end is malformed and never reads into the next packet.

pub(crate) mod connect;
pub(crate) mod publish;
pub(crate) mod subscribe;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::packet::{Auth, Connect, Disconnect, Packet, ProtocolVersion, ReasonCode};
use crate::properties::{self, PropertyContext};
use crate::reader::Reader;
use crate::varint;

pub(crate) const CONNECT: u8 = 1;
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBSCRIBE: u8 = 8;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const UNSUBSCRIBE: u8 = 10;
pub(crate) const UNSUBACK: u8 = 11;
pub(crate) const PINGREQ: u8 = 12;
pub(crate) const PINGRESP: u8 = 13;
pub(crate) const DISCONNECT: u8 = 14;
pub(crate) const AUTH: u8 = 15;

/// Reason codes a 5.0 DISCONNECT may carry (5.0 section 3.14.2.1).
pub(crate) const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Reason codes a 5.0 AUTH may carry (5.0 section 3.15.2.1).
pub(crate) const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// Decodes the first packet of a connection, which must be CONNECT [MQTT-3.1.0-1].
///
/// Returns `Ok(None)`, leaving the buffer untouched, while `buf` contains less than one
/// whole packet. `max_packet_size` limits the total packet size in bytes, fixed header included, and
/// `u32::MAX` sets no limit beyond the protocol's own. A larger packet is rejected with 0x95
/// Packet Too Large as soon as its fixed header is complete, before the body is buffered.
///
/// Errors after the protocol level was read carry `connect_version`, so the broker can send a
/// CONNACK of that version. An unknown protocol level is 0x84 Unsupported Protocol
/// Version [MQTT-3.1.2-2]. A wrong protocol name is 0x82 Protocol Error without a version,
/// because the server must not go on treating it as MQTT [MQTT-3.1.2-1].
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    if let Some(&first_byte) = buf.first()
        && first_byte >> 4 != CONNECT
    {
        return Err(DecodeError::protocol_error(format!(
            "first packet of a connection must be CONNECT, got packet type {}",
            first_byte >> 4
        )));
    }
    // CONNECT is the same in every version, so the version passed here does not matter.
    let Some(frame) = split_frame(buf, ProtocolVersion::V5, max_packet_size)? else {
        return Ok(None);
    };
    let connect = connect::decode_connect(frame.body)?;
    Ok(Some(connect))
}

/// Decodes one packet of an established connection of the given version.
///
/// On success it consumes exactly one packet from `buf`. Returns `Ok(None)`, leaving the buffer
/// untouched, while `buf` contains less than one whole packet. `max_packet_size` works as in
/// [`decode_connect`].
///
/// A second CONNECT is decoded and returned as [`Packet::Connect`], so the broker can treat it as
/// the protocol error it is [MQTT-3.1.0-2]. The decoder does not know which side sent a packet,
/// so rules that depend on direction are left to the caller: a server receiving CONNACK, SUBACK,
/// UNSUBACK or PINGRESP, and a client PUBLISH carrying a Subscription Identifier
/// [MQTT-3.3.4-6], are protocol errors the broker has to raise.
///
/// Topic filters in SUBSCRIBE and UNSUBSCRIBE are only checked to be valid UTF-8 strings. An
/// invalid filter (empty, `#` not last, a wildcard not filling its level) still decodes, because
/// 5.0 reports it with SUBACK code 0x8F Topic Filter Invalid for that filter alone; the broker
/// checks each filter with [`crate::topic::validate_topic_filter`].
pub fn decode_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(frame) = split_frame(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    decode_body(frame, version).map(Some)
}

/// One complete packet split off the read buffer.
struct Frame {
    first_byte: u8,
    body: Bytes,
}

impl Frame {
    fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    fn flags(&self) -> u8 {
        self.first_byte & 0x0F
    }
}

/// Reads the fixed header and, once the whole packet is buffered, splits it off `buf`.
fn split_frame(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Frame>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    check_fixed_header_flags(first_byte, version)?;

    let length_bytes = buf.get(1..).unwrap_or_default();
    let (remaining_len, length_len) = match varint::decode(length_bytes) {
        Ok(Some(decoded)) => decoded,
        Ok(None) => return Ok(None),
        Err(error) => {
            return Err(DecodeError::malformed(format!(
                "remaining length: {}",
                error.detail
            )));
        }
    };

    // The header is at most 5 bytes and the body at most 268,435,455, so the sum cannot overflow.
    let header_len = 1 + length_len;
    let total_len = header_len as u64 + u64::from(remaining_len);
    if total_len > u64::from(max_packet_size) {
        return Err(DecodeError::new(
            ReasonCode::PACKET_TOO_LARGE,
            format!(
                "packet of {total_len} bytes exceeds the maximum packet size of {max_packet_size} bytes"
            ),
        ));
    }
    let Ok(total_len) = usize::try_from(total_len) else {
        return Err(DecodeError::new(
            ReasonCode::PACKET_TOO_LARGE,
            format!("packet of {total_len} bytes does not fit in memory"),
        ));
    };

    if buf.len() < total_len {
        return Ok(None);
    }
    let packet = buf.split_to(total_len).freeze();
    Ok(Some(Frame {
        first_byte,
        body: packet.slice(header_len..),
    }))
}

/// Checks the packet type and the flag bits of the first byte (3.1.1 section 2.2.2, 5.0 section
/// 2.1.3). Reserved types and reserved flags set wrong are malformed [MQTT-2.2.2-1, MQTT-2.1.3-1].
fn check_fixed_header_flags(first_byte: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let packet_type = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let expected_flags = match packet_type {
        PUBLISH => return check_publish_flags(flags),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0b0010,
        AUTH if version.is_v5() => 0,
        CONNECT | CONNACK | PUBACK | PUBREC | PUBCOMP | SUBACK | UNSUBACK | PINGREQ | PINGRESP
        | DISCONNECT => 0,
        _ => {
            return Err(DecodeError::malformed(format!(
                "packet type {packet_type} is reserved in MQTT {}",
                version_name(version)
            )));
        }
    };
    if flags != expected_flags {
        return Err(DecodeError::malformed(format!(
            "{} has fixed header flags 0b{flags:04b}, expected 0b{expected_flags:04b}",
            packet_type_name(packet_type)
        )));
    }
    Ok(())
}

fn packet_type_name(packet_type: u8) -> &'static str {
    match packet_type {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        AUTH => "AUTH",
        _ => "reserved packet type",
    }
}

fn check_publish_flags(flags: u8) -> Result<(), DecodeError> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        // [MQTT-3.3.1-4]: both QoS bits set is malformed.
        return Err(DecodeError::malformed("PUBLISH has QoS 3"));
    }
    if qos == 0 && flags & 0b1000 != 0 {
        // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
        return Err(DecodeError::malformed(
            "PUBLISH has QoS 0 with the DUP flag set",
        ));
    }
    Ok(())
}

fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn decode_body(frame: Frame, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let packet_type = frame.packet_type();
    let flags = frame.flags();
    let mut reader = Reader::new(frame.body);
    let packet = match packet_type {
        CONNECT => Packet::Connect(Box::new(connect::decode_connect(reader.read_rest())?)),
        CONNACK => Packet::ConnAck(connect::decode_connack(&mut reader, version)?),
        PUBLISH => Packet::Publish(publish::decode_publish(&mut reader, flags, version)?),
        PUBACK => Packet::PubAck(publish::decode_ack(
            &mut reader,
            PropertyContext::PubAck,
            version,
        )?),
        PUBREC => Packet::PubRec(publish::decode_ack(
            &mut reader,
            PropertyContext::PubRec,
            version,
        )?),
        PUBREL => Packet::PubRel(publish::decode_ack(
            &mut reader,
            PropertyContext::PubRel,
            version,
        )?),
        PUBCOMP => Packet::PubComp(publish::decode_ack(
            &mut reader,
            PropertyContext::PubComp,
            version,
        )?),
        SUBSCRIBE => Packet::Subscribe(subscribe::decode_subscribe(&mut reader, version)?),
        SUBACK => Packet::SubAck(subscribe::decode_suback(&mut reader, version)?),
        UNSUBSCRIBE => Packet::Unsubscribe(subscribe::decode_unsubscribe(&mut reader, version)?),
        UNSUBACK => Packet::UnsubAck(subscribe::decode_unsuback(&mut reader, version)?),
        PINGREQ => {
            reader.expect_end("PINGREQ")?;
            Packet::PingReq
        }
        PINGRESP => {
            reader.expect_end("PINGRESP")?;
            Packet::PingResp
        }
        DISCONNECT => Packet::Disconnect(decode_disconnect(&mut reader, version)?),
        AUTH => Packet::Auth(decode_auth(&mut reader)?),
        _ => {
            // `check_fixed_header_flags` has already rejected the reserved types.
            return Err(DecodeError::malformed(format!(
                "packet type {packet_type} is reserved"
            )));
        }
    };
    reader.expect_end(packet.name())?;
    Ok(packet)
}

/// Reads a non-zero packet identifier [MQTT-2.3.1-1 in 3.1.1, MQTT-2.2.1-3 in 5.0].
pub(crate) fn read_packet_id(reader: &mut Reader, packet: &str) -> Result<u16, DecodeError> {
    // Field names are static and the packet name is added only on error, so decoding a valid
    // packet does not allocate for them.
    let packet_id = reader
        .read_u16("packet identifier")
        .map_err(|error| error.within(packet))?;
    if packet_id == 0 {
        return Err(DecodeError::protocol_error(format!(
            "{packet} has packet identifier 0"
        )));
    }
    Ok(packet_id)
}

/// Reads a 5.0 reason code and checks that the packet type may carry it.
pub(crate) fn read_reason(
    reader: &mut Reader,
    packet: &str,
    allowed: &[u8],
) -> Result<ReasonCode, DecodeError> {
    let code = reader
        .read_u8("reason code")
        .map_err(|error| error.within(packet))?;
    if !allowed.contains(&code) {
        return Err(DecodeError::protocol_error(format!(
            "reason code 0x{code:02X} is not valid in {packet}"
        )));
    }
    Ok(ReasonCode(code))
}

/// Decodes DISCONNECT. In 3.x it has no body. In 5.0 an empty body means 0x00 Normal
/// disconnection, and a body of only the reason code means no properties.
fn decode_disconnect(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() || reader.is_empty() {
        return Ok(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    }
    let reason = read_reason(reader, "DISCONNECT", DISCONNECT_REASONS)?;
    let properties = if reader.is_empty() {
        Default::default()
    } else {
        properties::decode(reader, PropertyContext::Disconnect)?
    };
    Ok(Disconnect { reason, properties })
}

/// Decodes AUTH (5.0 only). An empty body means 0x00 Success without properties.
fn decode_auth(reader: &mut Reader) -> Result<Auth, DecodeError> {
    if reader.is_empty() {
        return Ok(Auth {
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        });
    }
    let reason = read_reason(reader, "AUTH", AUTH_REASONS)?;
    // NOTE: 5.0 allows omitting the property length only together with the reason code, but a
    // reason code without property length is accepted too, the way DISCONNECT allows it.
    let properties = if reader.is_empty() {
        Default::default()
    } else {
        properties::decode(reader, PropertyContext::Auth)?
    };
    Ok(Auth { reason, properties })
}
