//! Packet encoding for every packet type, in both directions, for MQTT 3.1, 3.1.1 and 5.0.
//!
//! The encoder cannot fail. It writes the fields the target version has and ignores the rest:
//! properties and reason codes for 3.x, except that 5.0 reason codes in CONNACK and SUBACK are
//! mapped to 3.x return codes. In 5.0 it uses the short forms the specification allows, such as
//! a 2-byte PUBACK body for Success without properties and an empty DISCONNECT body for Normal
//! disconnection without properties. Properties not allowed in a packet type are skipped.
//!
//! The caller keeps values within protocol limits: strings and binary data of at most 65,535
//! bytes (longer ones are truncated) and packets of at most 268,435,455 body bytes. Field
//! combinations the specification forbids, such as a 3.1.1 password without a user name, are
//! written as given.

use bytes::BytesMut;

use crate::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
    SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::properties::{self, PropertyContext};
use crate::varint;
use crate::writer::{Sink, count};

/// Appends one encoded packet to `out`.
///
/// `version` is the protocol version of the connection. CONNECT is encoded in the version of its
/// own `protocol` field instead, because that field is what announces the version.
pub fn encode_packet(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    let body_len = count(|counter| encode_body(packet, version, counter));
    let remaining_len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out.reserve(1 + varint::encoded_len(remaining_len) + body_len);
    out.put_u8(first_byte(packet));
    out.put_varint(remaining_len);
    encode_body(packet, version, out);
}

/// Returns the number of bytes [`encode_packet`] would write.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body_len = count(|counter| encode_body(packet, version, counter));
    let remaining_len = u32::try_from(body_len).unwrap_or(u32::MAX);
    1 + varint::encoded_len(remaining_len) + body_len
}

/// Returns packet type and flags. DUP is cleared for QoS 0, where it must be 0 [MQTT-3.3.1-2].
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(publish) => {
            let qos = publish.qos as u8;
            let dup = publish.dup && publish.qos != QoS::AtMostOnce;
            0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(publish.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

fn encode_body(packet: &Packet, version: ProtocolVersion, out: &mut impl Sink) {
    match packet {
        Packet::Connect(connect) => encode_connect(connect, out),
        Packet::ConnAck(connack) => encode_connack(connack, version, out),
        Packet::Publish(publish) => encode_publish(publish, version, out),
        Packet::PubAck(ack) => encode_ack(ack, PropertyContext::PubAck, version, out),
        Packet::PubRec(ack) => encode_ack(ack, PropertyContext::PubRec, version, out),
        Packet::PubRel(ack) => encode_ack(ack, PropertyContext::PubRel, version, out),
        Packet::PubComp(ack) => encode_ack(ack, PropertyContext::PubComp, version, out),
        Packet::Subscribe(subscribe) => encode_subscribe(subscribe, version, out),
        Packet::SubAck(suback) => encode_suback(suback, version, out),
        Packet::Unsubscribe(unsubscribe) => encode_unsubscribe(unsubscribe, version, out),
        Packet::UnsubAck(unsuback) => encode_unsuback(unsuback, version, out),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => encode_disconnect(disconnect, version, out),
        Packet::Auth(auth) => encode_auth(auth, out),
    }
}

fn encode_properties_if_v5(
    properties: &crate::packet::Properties,
    context: PropertyContext,
    version: ProtocolVersion,
    out: &mut impl Sink,
) {
    if version.is_v5() {
        properties::encode(properties, context, out);
    }
}

fn encode_connect(connect: &Connect, out: &mut impl Sink) {
    let version = connect.protocol;
    let protocol_name = if version == ProtocolVersion::V3_1 {
        "MQIsdp"
    } else {
        "MQTT"
    };
    out.put_string(protocol_name);
    out.put_u8(version.level());

    let mut flags = 0u8;
    if connect.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &connect.will {
        flags |= 0x04 | ((will.qos as u8) << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    if connect.password.is_some() {
        flags |= 0x40;
    }
    if connect.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(connect.keep_alive);
    encode_properties_if_v5(&connect.properties, PropertyContext::Connect, version, out);

    out.put_string(&connect.client_id);
    if let Some(will) = &connect.will {
        encode_properties_if_v5(&will.properties, PropertyContext::Will, version, out);
        out.put_string(&will.topic);
        out.put_binary(&will.payload);
    }
    if let Some(username) = &connect.username {
        out.put_string(username);
    }
    if let Some(password) = &connect.password {
        out.put_binary(password);
    }
}

fn encode_connack(connack: &ConnAck, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u8(u8::from(connack.session_present));
    if version.is_v5() {
        out.put_u8(connack.reason.0);
        properties::encode(&connack.properties, PropertyContext::ConnAck, out);
    } else {
        out.put_u8(connack_return_code(connack.reason));
    }
}

/// Maps a 5.0 CONNACK reason code to the closest 3.1.1 return code (3.1.1 section 3.2.2.3).
pub(crate) fn connack_return_code(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED | ReasonCode::BAD_AUTHENTICATION_METHOD => {
            5
        }
        // 0x88 Server unavailable, 0x89 Server busy, 0x8B Server shutting down and every other
        // failure become 3 Server unavailable, the only 3.1.1 code for a server-side problem.
        _ => 3,
    }
}

fn encode_publish(publish: &Publish, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_string(&publish.topic);
    if publish.qos != QoS::AtMostOnce {
        // A QoS 1 or 2 PUBLISH without a packet identifier is a caller bug; 0 lets the peer
        // reject it instead of misframing the packet.
        out.put_u16(publish.packet_id.unwrap_or(0));
    }
    encode_properties_if_v5(&publish.properties, PropertyContext::Publish, version, out);
    out.put_slice(&publish.payload);
}

fn encode_ack(ack: &Ack, context: PropertyContext, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u16(ack.packet_id);
    if !version.is_v5() {
        return;
    }
    let has_properties = !properties::is_empty(&ack.properties, context);
    if ack.reason == ReasonCode::SUCCESS && !has_properties {
        return;
    }
    out.put_u8(ack.reason.0);
    if has_properties {
        properties::encode(&ack.properties, context, out);
    }
}

/// Returns the subscription options byte; 3.x carries only the QoS bits.
fn subscription_options_byte(options: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let qos = options.qos as u8;
    if !version.is_v5() {
        return qos;
    }
    qos | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling & 0b11) << 4)
}

fn encode_subscribe(subscribe: &Subscribe, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u16(subscribe.packet_id);
    encode_properties_if_v5(
        &subscribe.properties,
        PropertyContext::Subscribe,
        version,
        out,
    );
    for subscription in &subscribe.subscriptions {
        out.put_string(&subscription.filter);
        out.put_u8(subscription_options_byte(&subscription.options, version));
    }
}

fn encode_suback(suback: &SubAck, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u16(suback.packet_id);
    encode_properties_if_v5(&suback.properties, PropertyContext::SubAck, version, out);
    for reason in &suback.reasons {
        out.put_u8(suback_code(*reason, version));
    }
}

/// Maps a SUBACK reason code for the target version. 3.x has only granted QoS 0 to 2 and 0x80
/// Failure.
pub(crate) fn suback_code(reason: ReasonCode, version: ProtocolVersion) -> u8 {
    if version.is_v5() || reason.0 <= 2 {
        reason.0
    } else {
        0x80
    }
}

fn encode_unsubscribe(unsubscribe: &Unsubscribe, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u16(unsubscribe.packet_id);
    encode_properties_if_v5(
        &unsubscribe.properties,
        PropertyContext::Unsubscribe,
        version,
        out,
    );
    for filter in &unsubscribe.filters {
        out.put_string(filter);
    }
}

fn encode_unsuback(unsuback: &UnsubAck, version: ProtocolVersion, out: &mut impl Sink) {
    out.put_u16(unsuback.packet_id);
    if !version.is_v5() {
        return;
    }
    properties::encode(&unsuback.properties, PropertyContext::UnsubAck, out);
    for reason in &unsuback.reasons {
        out.put_u8(reason.0);
    }
}

/// Writes a 5.0 reason code and properties, leaving out what the short forms allow.
fn encode_reason_and_properties(
    reason: ReasonCode,
    properties: &crate::packet::Properties,
    context: PropertyContext,
    out: &mut impl Sink,
) {
    let has_properties = !properties::is_empty(properties, context);
    if reason == ReasonCode::SUCCESS && !has_properties {
        return;
    }
    out.put_u8(reason.0);
    if has_properties {
        properties::encode(properties, context, out);
    }
}

/// Writes DISCONNECT; 3.x DISCONNECT has no body, whatever the reason (`E0 00`).
fn encode_disconnect(disconnect: &Disconnect, version: ProtocolVersion, out: &mut impl Sink) {
    if version.is_v5() {
        encode_reason_and_properties(
            disconnect.reason,
            &disconnect.properties,
            PropertyContext::Disconnect,
            out,
        );
    }
}

/// Writes AUTH in the 5.0 layout for every version, because no other version has AUTH.
fn encode_auth(auth: &Auth, out: &mut impl Sink) {
    encode_reason_and_properties(auth.reason, &auth.properties, PropertyContext::Auth, out);
}
