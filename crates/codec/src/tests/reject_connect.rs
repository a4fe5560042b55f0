//! Rejection rules of CONNECT and CONNACK, each on hand-written bytes.

use bytes::BytesMut;

use super::reject::{MALFORMED, PROTOCOL_ERROR, V3, V5, assert_reason};
use super::{decode_err, decode_ok};
use crate::{DecodeError, Packet, ProtocolVersion, ReasonCode, decode_connect};

fn connect(bytes: &[u8]) -> Result<Option<crate::Connect>, DecodeError> {
    decode_connect(&mut BytesMut::from(bytes), u32::MAX)
}

#[track_caller]
fn connect_err(bytes: &[u8]) -> DecodeError {
    match connect(bytes) {
        Err(error) => error,
        other => panic!("expected a CONNECT error from {bytes:02X?}, got {other:?}"),
    }
}

// ---- CONNECT ------------------------------------------------------------------------------

/// 3.1.1 CONNECT with an empty client identifier and the given flags, and no payload fields.
fn connect_v3(flags: u8) -> Vec<u8> {
    vec![
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C, 0x00, 0x00,
    ]
}

#[test]
fn connect_minimal_accepted() {
    let connect = connect(&connect_v3(0x02)).unwrap().unwrap();
    assert_eq!(connect.protocol, V3);
    assert!(connect.clean_start);
    assert_eq!(connect.keep_alive, 60);
    assert_eq!(connect.client_id.as_str(), "");
}

#[test]
fn connect_first_packet_only() {
    let error = connect_err(&[0xC0, 0x00]);
    assert_eq!(error.reason_code(), PROTOCOL_ERROR);
    assert_eq!(error.connect_version, None);
}

#[test]
fn connect_reserved_flag() {
    let error = connect_err(&connect_v3(0x03));
    assert_eq!(error.reason_code(), MALFORMED);
    assert_eq!(error.connect_version, Some(V3));
}

#[test]
fn connect_will_flags_without_will() {
    // Will QoS 1 without the Will Flag.
    assert_eq!(connect_err(&connect_v3(0x0A)).reason_code(), MALFORMED);
    // Will QoS 2 without the Will Flag.
    assert_eq!(connect_err(&connect_v3(0x12)).reason_code(), MALFORMED);
    // Will Retain without the Will Flag.
    assert_eq!(connect_err(&connect_v3(0x22)).reason_code(), MALFORMED);
}

#[test]
fn connect_will_qos_3() {
    assert_eq!(connect_err(&connect_v3(0x1E)).reason_code(), MALFORMED);
}

#[test]
fn connect_password_without_username() {
    // 3.1.1: rejected on the flags alone.
    let mut bytes = connect_v3(0x42);
    bytes[1] += 4;
    bytes.extend_from_slice(&[0x00, 0x02, b'p', b'w']);
    assert_eq!(connect_err(&bytes).reason_code(), MALFORMED);

    // 5.0 allows it.
    let bytes = [
        0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x00, 0x02, b'p', b'w',
    ];
    let connect = connect(&bytes).unwrap().unwrap();
    assert_eq!(connect.username, None);
    assert_eq!(connect.password.as_deref(), Some(&b"pw"[..]));
}

#[test]
fn connect_unknown_level() {
    // MQTT level 6: 5.0 CONNACK with 0x84.
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0, 0,
    ];
    let error = connect_err(&bytes);
    assert_eq!(
        error.reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(error.connect_version, Some(V5));

    // MQTT level 3: a 3.x client, so a 3.1.1 CONNACK with return code 1.
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x3C, 0, 0,
    ];
    let error = connect_err(&bytes);
    assert_eq!(
        error.reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(error.connect_version, Some(V3));

    // MQIsdp level 4.
    let bytes = [
        0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x04, 0x02, 0x00, 0x3C, 0, 0,
    ];
    let error = connect_err(&bytes);
    assert_eq!(
        error.reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(error.connect_version, Some(ProtocolVersion::V3_1));
}

#[test]
fn connect_mqisdp_level_3_accepted() {
    let bytes = [
        0x10, 0x0F, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x01, b'c',
    ];
    let connect = connect(&bytes).unwrap().unwrap();
    assert_eq!(connect.protocol, ProtocolVersion::V3_1);
    assert_eq!(connect.client_id.as_str(), "c");
}

#[test]
fn connect_wrong_protocol_name() {
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0, 0,
    ];
    let error = connect_err(&bytes);
    assert_eq!(error.reason_code(), PROTOCOL_ERROR);
    assert_eq!(error.connect_version, None);
}

/// 3.1.1 CONNECT with a client identifier of the given raw bytes.
fn connect_with_client_id(client_id: &[u8]) -> Vec<u8> {
    let len = u8::try_from(client_id.len()).unwrap();
    let mut bytes = vec![
        0x10,
        12 + len,
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x04,
        0x02,
        0x00,
        0x3C,
    ];
    bytes.extend_from_slice(&[0x00, len]);
    bytes.extend_from_slice(client_id);
    bytes
}

#[test]
fn connect_client_id_invalid_utf8() {
    let cases: [&[u8]; 5] = [
        &[0xC3, 0x28],       // truncated two-byte sequence
        &[0x00],             // U+0000
        &[b'a', 0x00, b'b'], // U+0000 inside
        &[0xED, 0xA0, 0x80], // U+D800, a surrogate
        &[0xC0, 0xAF],       // overlong '/'
    ];
    for client_id in cases {
        let error = connect_err(&connect_with_client_id(client_id));
        assert_eq!(error.reason_code(), MALFORMED, "{client_id:02X?}");
        assert_eq!(error.connect_version, Some(V3), "{client_id:02X?}");
    }
}

#[test]
fn connect_string_past_end() {
    // The client identifier claims 16 bytes, 1 follows; a PINGREQ comes next in the buffer.
    let mut bytes = vec![
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x10, b'c',
    ];
    bytes.extend_from_slice(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00]);
    let error = connect_err(&bytes);
    assert_eq!(error.reason_code(), MALFORMED);
    assert_eq!(error.connect_version, Some(V3));
}

#[test]
fn connect_username_and_will_validated() {
    // User name flag with a user name of invalid UTF-8.
    let mut bytes = connect_v3(0x82);
    bytes[1] += 4;
    bytes.extend_from_slice(&[0x00, 0x02, 0xFF, 0xFE]);
    assert_eq!(connect_err(&bytes).reason_code(), MALFORMED);

    // Will topic with a wildcard: 0x90 Topic Name Invalid, reported in CONNACK.
    let mut bytes = connect_v3(0x06);
    bytes[1] += 7;
    bytes.extend_from_slice(&[0x00, 0x03, b'a', b'/', b'#', 0x00, 0x00]);
    let error = connect_err(&bytes);
    assert_eq!(error.reason_code(), ReasonCode::TOPIC_NAME_INVALID);
    assert_eq!(error.connect_version, Some(V3));

    // Will topic containing U+0000.
    let mut bytes = connect_v3(0x06);
    bytes[1] += 5;
    bytes.extend_from_slice(&[0x00, 0x01, 0x00, 0x00, 0x00]);
    assert_eq!(connect_err(&bytes).reason_code(), MALFORMED);
}

#[test]
fn connect_trailing_bytes() {
    let mut bytes = connect_v3(0x02);
    bytes[1] += 1;
    bytes.push(0x00);
    assert_eq!(connect_err(&bytes).reason_code(), MALFORMED);
}

/// 5.0 CONNECT with an empty client identifier and the given CONNECT properties.
fn connect_v5(properties: &[u8]) -> Vec<u8> {
    let properties_len = u8::try_from(properties.len()).unwrap();
    let mut bytes = vec![
        0x10,
        13 + properties_len,
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        0x05,
    ];
    bytes.extend_from_slice(&[0x02, 0x00, 0x3C, properties_len]);
    bytes.extend_from_slice(properties);
    bytes.extend_from_slice(&[0x00, 0x00]);
    bytes
}

#[test]
fn connect_v5_properties_accepted() {
    let connect = connect(&connect_v5(&[
        0x11, 0x00, 0x00, 0x00, 0x3C, 0x21, 0x00, 0x0A,
    ]));
    let connect = connect.unwrap().unwrap();
    assert_eq!(connect.properties.session_expiry_interval, Some(60));
    assert_eq!(connect.properties.receive_maximum, Some(10));
}

#[test]
fn connect_v5_property_errors() {
    let cases: [(&str, &[u8], ReasonCode); 12] = [
        ("Receive Maximum 0", &[0x21, 0x00, 0x00], PROTOCOL_ERROR),
        (
            "Maximum Packet Size 0",
            &[0x27, 0x00, 0x00, 0x00, 0x00],
            PROTOCOL_ERROR,
        ),
        (
            "duplicate Session Expiry",
            &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2],
            PROTOCOL_ERROR,
        ),
        (
            "Request Problem Information 2",
            &[0x17, 0x02],
            PROTOCOL_ERROR,
        ),
        (
            "Request Response Information 2",
            &[0x19, 0x02],
            PROTOCOL_ERROR,
        ),
        (
            "Authentication Data without method",
            &[0x16, 0x00, 0x01, 0xAA],
            PROTOCOL_ERROR,
        ),
        (
            "Topic Alias is a PUBLISH property",
            &[0x23, 0x00, 0x01],
            MALFORMED,
        ),
        (
            "Will Delay Interval is a will property",
            &[0x18, 0, 0, 0, 1],
            MALFORMED,
        ),
        ("unknown identifier 0x7F", &[0x7F, 0x00], MALFORMED),
        ("value runs past the list", &[0x21, 0x00], MALFORMED),
        (
            "user property value invalid UTF-8",
            &[0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0xFF],
            MALFORMED,
        ),
        (
            "user property name U+0000",
            &[0x26, 0x00, 0x01, 0x00, 0x00, 0x00],
            MALFORMED,
        ),
    ];
    for (case, properties, expected) in cases {
        let error = connect_err(&connect_v5(properties));
        assert_eq!(error.reason_code(), expected, "{case}: {error}");
        assert_eq!(error.connect_version, Some(V5), "{case}");
    }
}

#[test]
fn connect_v5_property_length_past_end() {
    // Property length 100 in a packet with 2 bytes after it.
    let bytes = [
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x64, 0x00, 0x00,
    ];
    let error = connect_err(&bytes);
    assert_eq!(error.reason_code(), MALFORMED);
    assert_eq!(error.connect_version, Some(V5));
}

#[test]
fn connect_v5_will_property_not_allowed() {
    // Will properties with Session Expiry Interval, a CONNECT property.
    let bytes = [
        0x10, 0x18, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x00,
        0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b't', 0x00, 0x00,
    ];
    assert_eq!(connect_err(&bytes).reason_code(), MALFORMED);
}

#[test]
fn second_connect_returned() {
    let packet = decode_ok(&connect_v3(0x02), V3);
    assert!(matches!(packet, Packet::Connect(_)), "{packet:?}");
}

// ---- CONNACK ------------------------------------------------------------------------------

#[test]
fn connack_rejections() {
    assert_reason(&[0x20, 0x02, 0x02, 0x00], V3, MALFORMED);
    assert_reason(&[0x20, 0x02, 0x01, 0x05], V3, PROTOCOL_ERROR);
    assert_reason(&[0x20, 0x02, 0x00, 0x06], V3, PROTOCOL_ERROR);
    assert_reason(&[0x20, 0x03, 0x00, 0x00, 0x00], V3, MALFORMED);
    assert_reason(&[0x20, 0x03, 0x01, 0x87, 0x00], V5, PROTOCOL_ERROR);
    assert_reason(&[0x20, 0x03, 0x00, 0x01, 0x00], V5, PROTOCOL_ERROR);
    assert_reason(&[0x20, 0x02, 0x00, 0x00], V5, MALFORMED);
}

#[test]
fn connack_v5_property_ranges() {
    let cases: [(&str, &[u8]); 7] = [
        ("Maximum QoS 2", &[0x24, 0x02]),
        ("Retain Available 2", &[0x25, 0x02]),
        ("Wildcard Subscription Available 2", &[0x28, 0x02]),
        ("Subscription Identifier Available 2", &[0x29, 0x02]),
        ("Shared Subscription Available 2", &[0x2A, 0x02]),
        ("Receive Maximum 0", &[0x21, 0x00, 0x00]),
        ("Maximum Packet Size 0", &[0x27, 0x00, 0x00, 0x00, 0x00]),
    ];
    for (case, properties) in cases {
        let len = u8::try_from(properties.len()).unwrap();
        let mut bytes = vec![0x20, 3 + len, 0x00, 0x00, len];
        bytes.extend_from_slice(properties);
        let error = decode_err(&bytes, V5);
        assert_eq!(error.reason_code(), PROTOCOL_ERROR, "{case}: {error}");
    }
}
