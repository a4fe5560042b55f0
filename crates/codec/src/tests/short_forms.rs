//! Exact encoder output, including the 3.x mappings and the 5.0 short forms, and decoder
//! acceptance of every short form 5.0 allows.

use bytes::{Bytes, BytesMut};

use super::decode_ok;
use crate::packet::*;
use crate::{decode_packet, encode_packet, encoded_len};

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[track_caller]
fn assert_encodes(packet: &Packet, version: ProtocolVersion, expected: &[u8]) {
    let mut out = BytesMut::new();
    encode_packet(packet, version, &mut out);
    assert_eq!(&out[..], expected, "{packet:?} in {version:?}");
    assert_eq!(
        encoded_len(packet, version),
        expected.len(),
        "encoded_len of {packet:?}"
    );
}

fn reason_string(text: &str) -> Properties {
    Properties {
        reason_string: Some(ByteStr::from(text)),
        ..Default::default()
    }
}

#[test]
fn connack_v3_return_codes() {
    let cases = [
        (0x00, 0),
        (0x84, 1),
        (0x85, 2),
        (0x88, 3),
        (0x89, 3),
        (0x8B, 3),
        (0x80, 3),
        (0x97, 3),
        (0x86, 4),
        (0x87, 5),
        (0x8A, 5),
        (0x8C, 5),
    ];
    for (reason, return_code) in cases {
        let packet = Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode(reason),
            properties: reason_string("ignored in 3.1.1"),
        });
        assert_encodes(&packet, V3, &[0x20, 0x02, 0x00, return_code]);
    }
}

#[test]
fn suback_v3_failure_code() {
    let reasons = [0x00, 0x01, 0x02, 0x80, 0x87, 0x8F, 0x91, 0xA2]
        .map(ReasonCode)
        .to_vec();
    let packet = Packet::SubAck(SubAck {
        packet_id: 7,
        reasons,
        properties: Properties::default(),
    });
    assert_encodes(
        &packet,
        V3,
        &[
            0x90, 0x0A, 0x00, 0x07, 0x00, 0x01, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80,
        ],
    );
    assert_encodes(
        &packet,
        V5,
        &[
            0x90, 0x0B, 0x00, 0x07, 0x00, 0x00, 0x01, 0x02, 0x80, 0x87, 0x8F, 0x91, 0xA2,
        ],
    );
}

#[test]
fn unsuback_v3_no_payload() {
    let packet = Packet::UnsubAck(UnsubAck {
        packet_id: 7,
        reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: reason_string("ignored"),
    });
    assert_encodes(&packet, V3, &[0xB0, 0x02, 0x00, 0x07]);
    assert_encodes(
        &packet,
        V5,
        &[
            0xB0, 0x0F, 0x00, 0x07, 0x0A, 0x1F, 0x00, 0x07, b'i', b'g', b'n', b'o', b'r', b'e',
            b'd', 0x00, 0x11,
        ],
    );
}

#[test]
fn disconnect_v3_always_empty() {
    let packet = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SESSION_TAKEN_OVER,
        properties: reason_string("taken over"),
    });
    assert_encodes(&packet, V3, &[0xE0, 0x00]);
    assert_encodes(&packet, ProtocolVersion::V3_1, &[0xE0, 0x00]);
}

#[test]
fn disconnect_v5_short_forms() {
    let normal = Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    assert_encodes(&normal, V5, &[0xE0, 0x00]);
    let taken_over = Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER));
    assert_encodes(&taken_over, V5, &[0xE0, 0x01, 0x8E]);
    let with_reason_string = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: reason_string("x"),
    });
    assert_encodes(
        &with_reason_string,
        V5,
        &[0xE0, 0x06, 0x00, 0x04, 0x1F, 0x00, 0x01, b'x'],
    );
}

#[test]
fn ack_v5_short_forms() {
    assert_encodes(&Packet::PubAck(Ack::new(7)), V5, &[0x40, 0x02, 0x00, 0x07]);
    let no_subscribers = Ack {
        packet_id: 7,
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        properties: Properties::default(),
    };
    assert_encodes(
        &Packet::PubRec(no_subscribers.clone()),
        V5,
        &[0x50, 0x03, 0x00, 0x07, 0x10],
    );
    let with_properties = Ack {
        packet_id: 7,
        reason: ReasonCode::SUCCESS,
        properties: reason_string("x"),
    };
    assert_encodes(
        &Packet::PubComp(with_properties),
        V5,
        &[0x70, 0x08, 0x00, 0x07, 0x00, 0x04, 0x1F, 0x00, 0x01, b'x'],
    );
    // 3.1.1 acknowledgements carry only the packet identifier.
    assert_encodes(
        &Packet::PubRec(no_subscribers),
        V3,
        &[0x50, 0x02, 0x00, 0x07],
    );
    assert_encodes(&Packet::PubRel(Ack::new(9)), V3, &[0x62, 0x02, 0x00, 0x09]);
}

#[test]
fn auth_v5_short_form() {
    let success = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::default(),
    });
    assert_encodes(&success, V5, &[0xF0, 0x00]);
}

#[test]
fn decoder_accepts_ack_short_forms() {
    for first_byte in [0x40, 0x50, 0x62, 0x70] {
        let forms: [&[u8]; 3] = [
            &[first_byte, 0x02, 0x00, 0x07],
            &[first_byte, 0x03, 0x00, 0x07, 0x00],
            &[first_byte, 0x04, 0x00, 0x07, 0x00, 0x00],
        ];
        for bytes in forms {
            let packet = decode_ok(bytes, V5);
            let ack = match packet {
                Packet::PubAck(ack)
                | Packet::PubRec(ack)
                | Packet::PubRel(ack)
                | Packet::PubComp(ack) => ack,
                other => panic!("expected an acknowledgement from {bytes:02X?}, got {other:?}"),
            };
            assert_eq!(ack, Ack::new(7), "{bytes:02X?}");
        }
    }
}

#[test]
fn decoder_accepts_disconnect_short_forms() {
    let forms: [(&[u8], u8); 3] = [
        (&[0xE0, 0x00], 0x00),
        (&[0xE0, 0x01, 0x04], 0x04),
        (&[0xE0, 0x02, 0x8E, 0x00], 0x8E),
    ];
    for (bytes, reason) in forms {
        let expected = Packet::Disconnect(Disconnect::new(ReasonCode(reason)));
        assert_eq!(decode_ok(bytes, V5), expected, "{bytes:02X?}");
    }
}

#[test]
fn decoder_accepts_auth_short_forms() {
    let forms: [(&[u8], u8); 3] = [
        (&[0xF0, 0x00], 0x00),
        (&[0xF0, 0x01, 0x18], 0x18),
        (&[0xF0, 0x02, 0x19, 0x00], 0x19),
    ];
    for (bytes, reason) in forms {
        let expected = Packet::Auth(Auth {
            reason: ReasonCode(reason),
            properties: Properties::default(),
        });
        assert_eq!(decode_ok(bytes, V5), expected, "{bytes:02X?}");
    }
}

#[test]
fn connect_v5_known_bytes() {
    let packet = Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteStr::from("c"),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(60),
            ..Default::default()
        },
    }));
    let expected = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x05, 0x11, 0x00,
        0x00, 0x00, 0x3C, 0x00, 0x01, b'c',
    ];
    assert_encodes(&packet, V5, &expected);
    // CONNECT is written in the version of its own protocol field.
    assert_encodes(&packet, V3, &expected);
}

#[test]
fn connect_v3_1_known_bytes() {
    let packet = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1,
        clean_start: false,
        keep_alive: 10,
        client_id: ByteStr::from("c"),
        will: Some(Will {
            topic: ByteStr::from("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: Some(ByteStr::from("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: Properties::default(),
    }));
    let expected = [
        0x10, 0x1D, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0xEC, 0x00, 0x0A, 0x00,
        0x01, b'c', 0x00, 0x01, b'w', 0x00, 0x03, b'b', b'y', b'e', 0x00, 0x01, b'u', 0x00, 0x01,
        b'p',
    ];
    assert_encodes(&packet, ProtocolVersion::V3_1, &expected);
}

#[test]
fn publish_qos_0_clears_dup() {
    let packet = Packet::Publish(Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteStr::from("t"),
        packet_id: Some(5),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    });
    assert_encodes(&packet, V3, &[0x30, 0x04, 0x00, 0x01, b't', b'x']);
}

#[test]
fn encoder_skips_disallowed_properties() {
    // Topic Alias is a PUBLISH property, so CONNACK leaves it out.
    let packet = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: Properties {
            topic_alias: Some(3),
            ..Default::default()
        },
    });
    assert_encodes(&packet, V5, &[0x20, 0x03, 0x01, 0x00, 0x00]);
}

#[test]
fn subscribe_v3_writes_qos_only() {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
    };
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: ByteStr::from("a"),
            options,
        }],
        properties: Properties::default(),
    });
    assert_encodes(
        &packet,
        V3,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x01],
    );
    assert_encodes(
        &packet,
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x2D],
    );
}

#[test]
fn publish_decode_is_zero_copy() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x02, b'a', b'b', b'x', b'y', b'z'][..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Packet::Publish(publish)) = decode_packet(&mut buf, V3, u32::MAX).unwrap() else {
        panic!("expected PUBLISH");
    };
    assert_eq!(publish.topic.as_str(), "ab");
    assert_eq!(&publish.payload[..], b"xyz");
    let topic_address = publish.topic.as_bytes().as_ptr() as usize;
    let payload_address = publish.payload.as_ptr() as usize;
    assert!((start..end).contains(&topic_address), "topic was copied");
    assert!(
        (start..end).contains(&payload_address),
        "payload was copied"
    );
}
