//! Rejection rules of the fixed header and of every packet but CONNECT and CONNACK, each on
//! hand-written bytes.

use bytes::BytesMut;

use super::{decode, decode_err, decode_ok};
use crate::{Packet, ProtocolVersion, ReasonCode, decode_connect};

pub(super) const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
pub(super) const V5: ProtocolVersion = ProtocolVersion::V5;
pub(super) const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
pub(super) const PROTOCOL_ERROR: ReasonCode = ReasonCode::PROTOCOL_ERROR;

#[track_caller]
pub(super) fn assert_reason(bytes: &[u8], version: ProtocolVersion, expected: ReasonCode) {
    let error = decode_err(bytes, version);
    assert_eq!(error.reason_code(), expected, "{bytes:02X?}: {error}");
}

// ---- Fixed header -------------------------------------------------------------------------

#[test]
fn remaining_length_five_bytes() {
    assert_reason(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], V3, MALFORMED);
    // Rejected as soon as the fourth length byte has its continuation bit set.
    assert_reason(&[0x30, 0x80, 0x80, 0x80, 0x80], V5, MALFORMED);
}

#[test]
fn remaining_length_non_minimal() {
    // PINGREQ with remaining length 0 written in two bytes.
    assert_reason(&[0xC0, 0x80, 0x00], V3, MALFORMED);
    assert_reason(&[0xC0, 0x80, 0x00], V5, MALFORMED);
    // 1 written in three bytes.
    assert_reason(&[0x30, 0x81, 0x80, 0x00], V5, MALFORMED);
}

#[test]
fn reserved_flags_rejected() {
    let cases: [&[u8]; 14] = [
        &[0x80, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], // SUBSCRIBE 0x80
        &[0x83, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], // SUBSCRIBE 0x83
        &[0xA0, 0x04, 0x00, 0x01, 0x00, 0x00],       // UNSUBSCRIBE 0xA0
        &[0x60, 0x02, 0x00, 0x01],                   // PUBREL 0x60
        &[0x63, 0x02, 0x00, 0x01],                   // PUBREL 0x63
        &[0x41, 0x02, 0x00, 0x01],                   // PUBACK 0x41
        &[0x52, 0x02, 0x00, 0x01],                   // PUBREC 0x52
        &[0x78, 0x02, 0x00, 0x01],                   // PUBCOMP 0x78
        &[0x91, 0x03, 0x00, 0x01, 0x00],             // SUBACK 0x91
        &[0xB4, 0x02, 0x00, 0x01],                   // UNSUBACK 0xB4
        &[0xC1, 0x00],                               // PINGREQ 0xC1
        &[0xD8, 0x00],                               // PINGRESP 0xD8
        &[0xE2, 0x00],                               // DISCONNECT 0xE2
        &[0x21, 0x02, 0x00, 0x00],                   // CONNACK 0x21
    ];
    for bytes in cases {
        assert_reason(bytes, V3, MALFORMED);
        assert_reason(bytes, V5, MALFORMED);
    }
    assert_reason(&[0xF1, 0x00], V5, MALFORMED); // AUTH 0xF1
    assert_reason(&[0x11, 0x00], V5, MALFORMED); // CONNECT 0x11
}

#[test]
fn reserved_flags_rejected_before_body() {
    // Only the first byte has arrived; it is already wrong.
    assert_reason(&[0x80], V3, MALFORMED);
}

#[test]
fn reserved_packet_types() {
    assert_reason(&[0x00, 0x00], V3, MALFORMED);
    assert_reason(&[0x00, 0x00], V5, MALFORMED);
    // AUTH exists only in 5.0.
    assert_reason(&[0xF0, 0x00], V3, MALFORMED);
    assert_reason(&[0xF0, 0x00], ProtocolVersion::V3_1, MALFORMED);
}

#[test]
fn publish_qos_3() {
    assert_reason(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], V3, MALFORMED);
    assert_reason(
        &[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00],
        V5,
        MALFORMED,
    );
}

#[test]
fn publish_qos_0_with_dup() {
    assert_reason(&[0x38, 0x03, 0x00, 0x01, b'a'], V3, MALFORMED);
    assert_reason(&[0x38, 0x04, 0x00, 0x01, b'a', 0x00], V5, MALFORMED);
}

#[test]
fn packet_too_large_from_header() {
    // The header announces 16,383 body bytes; none of them has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
    let error = crate::decode_packet(&mut buf, V5, 1024).unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::PACKET_TOO_LARGE);

    let mut buf = BytesMut::from(&[0x10, 0xFF, 0x7F][..]);
    let error = decode_connect(&mut buf, 1024).unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(error.connect_version, None);
}

#[test]
fn packet_too_large_counts_header() {
    // PINGREQ is 2 bytes in total, fixed header included.
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    let error = crate::decode_packet(&mut buf, V3, 1).unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(
        crate::decode_packet(&mut buf, V3, 2),
        Ok(Some(Packet::PingReq))
    );
}

#[test]
fn partial_input_waits_untouched() {
    let inputs: [&[u8]; 5] = [
        &[],
        &[0x30],
        &[0x30, 0x80],
        &[0x30, 0xFF, 0xFF, 0x7F],
        &[0x30, 0x05, 0x00, 0x01, b'a', 0x00],
    ];
    for input in inputs {
        let mut buf = BytesMut::from(input);
        assert_eq!(
            crate::decode_packet(&mut buf, V5, u32::MAX),
            Ok(None),
            "{input:02X?}"
        );
        assert_eq!(&buf[..], input, "buffer changed for {input:02X?}");
    }
    let connect_inputs: [&[u8]; 4] = [
        &[],
        &[0x10],
        &[0x10, 0x80],
        &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q'],
    ];
    for input in connect_inputs {
        let mut buf = BytesMut::from(input);
        assert_eq!(decode_connect(&mut buf, u32::MAX), Ok(None), "{input:02X?}");
        assert_eq!(&buf[..], input, "buffer changed for {input:02X?}");
    }
}

// ---- PUBLISH ------------------------------------------------------------------------------

#[test]
fn publish_wildcard_topic() {
    for topic in [&b"a/+"[..], b"#", b"a/#", b"a+b"] {
        let len = u8::try_from(topic.len()).unwrap();
        let mut bytes = vec![0x30, 2 + len, 0x00, len];
        bytes.extend_from_slice(topic);
        assert_reason(&bytes, V3, ReasonCode::TOPIC_NAME_INVALID);
        bytes[1] += 1;
        bytes.push(0x00);
        assert_reason(&bytes, V5, ReasonCode::TOPIC_NAME_INVALID);
    }
}

#[test]
fn publish_empty_topic() {
    assert_reason(&[0x30, 0x02, 0x00, 0x00], V3, PROTOCOL_ERROR);
    assert_reason(&[0x30, 0x03, 0x00, 0x00, 0x00], V5, PROTOCOL_ERROR);
    // With a Topic Alias the empty topic is allowed.
    let packet = decode_ok(&[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01], V5);
    let Packet::Publish(publish) = packet else {
        panic!("expected PUBLISH, got {packet:?}")
    };
    assert_eq!(publish.topic.as_str(), "");
    assert_eq!(publish.properties.topic_alias, Some(1));
}

#[test]
fn publish_topic_alias_0() {
    assert_reason(
        &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00],
        V5,
        ReasonCode::TOPIC_ALIAS_INVALID,
    );
}

#[test]
fn publish_packet_id_0() {
    assert_reason(
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
        V3,
        PROTOCOL_ERROR,
    );
    assert_reason(
        &[0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00],
        V5,
        PROTOCOL_ERROR,
    );
}

#[test]
fn publish_topic_invalid_utf8() {
    let cases: [&[u8]; 4] = [
        &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
        &[0x30, 0x03, 0x00, 0x01, 0x00],
        &[0x30, 0x05, 0x00, 0x03, 0xED, 0xBF, 0xBF],
        &[0x30, 0x03, 0x00, 0x01, 0x80],
    ];
    for bytes in cases {
        assert_reason(bytes, V3, MALFORMED);
    }
}

#[test]
fn publish_topic_past_end() {
    // The topic claims 5 bytes inside a 3-byte body; the next packet must not be read.
    let bytes = [0x30, 0x03, 0x00, 0x05, b'a', 0xC0, 0x00, 0xC0, 0x00];
    assert_reason(&bytes, V3, MALFORMED);
    assert_reason(&[0x30, 0x01, 0x00], V3, MALFORMED);
}

#[test]
fn publish_v5_property_errors() {
    let cases: [(&str, &[u8], ReasonCode); 9] = [
        ("property length past end", &[0x05, 0x01], MALFORMED),
        ("property length non-minimal", &[0x80, 0x00], MALFORMED),
        (
            "Payload Format Indicator 2",
            &[0x02, 0x01, 0x02],
            PROTOCOL_ERROR,
        ),
        (
            "Subscription Identifier 0",
            &[0x02, 0x0B, 0x00],
            PROTOCOL_ERROR,
        ),
        (
            "Subscription Identifier non-minimal",
            &[0x03, 0x0B, 0x81, 0x00],
            MALFORMED,
        ),
        (
            "duplicate Message Expiry",
            &[0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1],
            PROTOCOL_ERROR,
        ),
        (
            "Session Expiry is not a PUBLISH property",
            &[0x05, 0x11, 0, 0, 0, 1],
            MALFORMED,
        ),
        (
            "Response Topic with wildcard",
            &[0x05, 0x08, 0x00, 0x02, b'a', b'#'],
            PROTOCOL_ERROR,
        ),
        (
            "Content Type U+0000",
            &[0x04, 0x03, 0x00, 0x01, 0x00],
            MALFORMED,
        ),
    ];
    for (case, properties, expected) in cases {
        let mut bytes = vec![
            0x30,
            3 + u8::try_from(properties.len()).unwrap(),
            0x00,
            0x01,
            b'a',
        ];
        bytes.extend_from_slice(properties);
        let error = decode_err(&bytes, V5);
        assert_eq!(error.reason_code(), expected, "{case}: {error}");
    }
}

#[test]
fn publish_v5_repeated_subscription_identifier() {
    let bytes = [0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x0B, 0x01, 0x0B, 0x02];
    let Packet::Publish(publish) = decode_ok(&bytes, V5) else {
        panic!("expected PUBLISH")
    };
    assert_eq!(publish.properties.subscription_identifiers, vec![1, 2]);
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------------------------

#[test]
fn ack_packet_id_0() {
    for first_byte in [0x40, 0x50, 0x62, 0x70] {
        assert_reason(&[first_byte, 0x02, 0x00, 0x00], V3, PROTOCOL_ERROR);
        assert_reason(&[first_byte, 0x02, 0x00, 0x00], V5, PROTOCOL_ERROR);
    }
}

#[test]
fn ack_trailing_bytes_v3() {
    for first_byte in [0x40, 0x50, 0x62, 0x70] {
        assert_reason(&[first_byte, 0x03, 0x00, 0x01, 0x00], V3, MALFORMED);
    }
}

#[test]
fn ack_v5_invalid_reason() {
    assert_reason(&[0x40, 0x03, 0x00, 0x01, 0x05], V5, PROTOCOL_ERROR);
    // 0x92 is a PUBREL code, not a PUBACK code.
    assert_reason(&[0x40, 0x03, 0x00, 0x01, 0x92], V5, PROTOCOL_ERROR);
    // 0x10 is a PUBACK code, not a PUBREL code.
    assert_reason(&[0x62, 0x03, 0x00, 0x01, 0x10], V5, PROTOCOL_ERROR);
}

#[test]
fn ack_v5_trailing_and_properties() {
    // Property length 0, then one byte too many.
    assert_reason(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], V5, MALFORMED);
    // Topic Alias is not an acknowledgement property.
    assert_reason(
        &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
        V5,
        MALFORMED,
    );
    // Property length past the end.
    assert_reason(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x02], V5, MALFORMED);
}

// ---- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK ---------------------------------------------

#[test]
fn subscribe_no_filters() {
    assert_reason(&[0x82, 0x02, 0x00, 0x01], V3, PROTOCOL_ERROR);
    assert_reason(&[0x82, 0x03, 0x00, 0x01, 0x00], V5, PROTOCOL_ERROR);
}

#[test]
fn subscribe_packet_id_0() {
    assert_reason(
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        V3,
        PROTOCOL_ERROR,
    );
}

#[test]
fn subscribe_options_v3() {
    // Every bit above the QoS bits is reserved in 3.1.1, and QoS 3 is malformed too.
    for options in [0x04, 0x08, 0x10, 0x40, 0x80, 0x03] {
        let bytes = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options];
        assert_reason(&bytes, V3, MALFORMED);
    }
}

#[test]
fn subscribe_options_v5() {
    let cases = [
        (0x40, MALFORMED),
        (0x80, MALFORMED),
        (0x03, PROTOCOL_ERROR),
        (0x30, PROTOCOL_ERROR),
    ];
    for (options, expected) in cases {
        let bytes = [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options];
        assert_reason(&bytes, V5, expected);
    }
    let bytes = [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x2E];
    let Packet::Subscribe(subscribe) = decode_ok(&bytes, V5) else {
        panic!("expected SUBSCRIBE")
    };
    let options = subscribe.subscriptions[0].options;
    assert_eq!(options.qos, crate::QoS::ExactlyOnce);
    assert!(options.no_local);
    assert!(options.retain_as_published);
    assert_eq!(options.retain_handling, 2);
}

#[test]
fn subscribe_options_missing() {
    assert_reason(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], V3, MALFORMED);
}

#[test]
fn subscribe_invalid_filters_decode() {
    // Filter validity is the broker's per-filter decision (SUBACK 0x8F in 5.0).
    for filter in [&b"a/#/b"[..], b"", b"a+", b"#a"] {
        let len = u8::try_from(filter.len()).unwrap();
        let mut bytes = vec![0x82, 5 + len, 0x00, 0x01, 0x00, len];
        bytes.extend_from_slice(filter);
        bytes.push(0x01);
        let Packet::Subscribe(subscribe) = decode_ok(&bytes, V3) else {
            panic!("SUBSCRIBE")
        };
        assert_eq!(
            subscribe.subscriptions[0].filter.as_bytes().as_ref(),
            filter
        );
    }
}

#[test]
fn subscribe_filter_invalid_utf8() {
    assert_reason(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00],
        V3,
        MALFORMED,
    );
    assert_reason(
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28, 0x00],
        V3,
        MALFORMED,
    );
}

#[test]
fn subscribe_v5_properties() {
    // Two Subscription Identifiers.
    let bytes = [
        0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
    ];
    assert_reason(&bytes, V5, PROTOCOL_ERROR);
    // Subscription Identifier 0.
    let bytes = [
        0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00,
    ];
    assert_reason(&bytes, V5, PROTOCOL_ERROR);
    // Reason String is not a SUBSCRIBE property.
    let bytes = [
        0x82, 0x0A, 0x00, 0x01, 0x03, 0x1F, 0x00, 0x00, 0x00, 0x01, b'a', 0x00,
    ];
    assert_reason(&bytes, V5, MALFORMED);
}

#[test]
fn subscribe_no_local_shared() {
    let mut bytes = vec![0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A];
    bytes.extend_from_slice(b"$share/g/a");
    bytes.push(0x04);
    assert_reason(&bytes, V5, PROTOCOL_ERROR);
}

#[test]
fn unsubscribe_no_filters() {
    assert_reason(&[0xA2, 0x02, 0x00, 0x01], V3, PROTOCOL_ERROR);
    assert_reason(&[0xA2, 0x03, 0x00, 0x01, 0x00], V5, PROTOCOL_ERROR);
}

#[test]
fn unsubscribe_packet_id_0() {
    assert_reason(
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        V3,
        PROTOCOL_ERROR,
    );
}

#[test]
fn unsubscribe_v5_subscription_identifier() {
    let bytes = [0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b'a'];
    assert_reason(&bytes, V5, MALFORMED);
}

#[test]
fn suback_rejections() {
    assert_reason(&[0x90, 0x03, 0x00, 0x01, 0x03], V3, PROTOCOL_ERROR);
    assert_reason(&[0x90, 0x02, 0x00, 0x01], V3, PROTOCOL_ERROR);
    assert_reason(&[0x90, 0x03, 0x00, 0x00, 0x00], V3, PROTOCOL_ERROR);
    assert_reason(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x03], V5, PROTOCOL_ERROR);
}

#[test]
fn unsuback_rejections() {
    // 3.1.1 UNSUBACK has no payload.
    assert_reason(&[0xB0, 0x03, 0x00, 0x01, 0x00], V3, MALFORMED);
    assert_reason(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], V5, PROTOCOL_ERROR);
    assert_reason(&[0xB0, 0x03, 0x00, 0x01, 0x00], V5, PROTOCOL_ERROR);
}

// ---- PINGREQ, PINGRESP, DISCONNECT, AUTH --------------------------------------------------

#[test]
fn ping_with_body() {
    assert_reason(&[0xC0, 0x01, 0x00], V3, MALFORMED);
    assert_reason(&[0xC0, 0x01, 0x00], V5, MALFORMED);
    assert_reason(&[0xD0, 0x01, 0x00], V5, MALFORMED);
}

#[test]
fn disconnect_with_body() {
    assert_reason(&[0xE0, 0x01, 0x00], V3, MALFORMED);
    // 5.0: reason, property length 0, then garbage.
    assert_reason(&[0xE0, 0x03, 0x00, 0x00, 0xFF], V5, MALFORMED);
}

#[test]
fn disconnect_v5_rejections() {
    assert_reason(&[0xE0, 0x01, 0x03], V5, PROTOCOL_ERROR);
    // Topic Alias is not a DISCONNECT property.
    assert_reason(&[0xE0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01], V5, MALFORMED);
    // Property length past the end.
    assert_reason(&[0xE0, 0x02, 0x00, 0x05], V5, MALFORMED);
}

#[test]
fn auth_rejections() {
    assert_reason(&[0xF0, 0x01, 0x01], V5, PROTOCOL_ERROR);
    // Authentication Data without Authentication Method.
    assert_reason(
        &[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0xAA],
        V5,
        PROTOCOL_ERROR,
    );
    assert_reason(&[0xF0, 0x03, 0x18, 0x00, 0x00], V5, MALFORMED);
}

#[test]
fn never_reads_next_packet() {
    // A complete PINGREQ followed by a partial PUBLISH: one packet, then a wait.
    let mut buf = BytesMut::from(&[0xC0, 0x00, 0x30, 0x05, 0x00][..]);
    assert_eq!(
        crate::decode_packet(&mut buf, V3, u32::MAX),
        Ok(Some(Packet::PingReq))
    );
    assert_eq!(&buf[..], &[0x30, 0x05, 0x00]);
    assert_eq!(decode(&buf, V3), Ok(None));
}
