//! Streams of packets fed in pieces, and arbitrary input that must never panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{VERSIONS, packet, versioned_packet};
use crate::packet::{Ack, ByteStr, Publish, QoS, Subscribe, Subscription, SubscriptionOptions};
use crate::{Packet, Properties, ProtocolVersion, decode_connect, decode_packet, encode_packet};

/// Feeds `stream` one byte at a time and decodes after each byte, as a socket reader would.
fn decode_byte_by_byte(stream: &[u8], version: ProtocolVersion) -> Vec<Packet> {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for &byte in stream {
        buf.extend_from_slice(&[byte]);
        loop {
            let before = buf.clone();
            match decode_packet(&mut buf, version, u32::MAX) {
                Ok(Some(packet)) => packets.push(packet),
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) changed the buffer");
                    break;
                }
                Err(error) => panic!("decoding the stream failed: {error}"),
            }
        }
    }
    assert!(buf.is_empty(), "{} bytes left after the stream", buf.len());
    packets
}

#[test]
fn split_feed_fixed_stream() {
    let version = ProtocolVersion::V5;
    let packets = vec![
        Packet::PingReq,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: ByteStr::from("sensors/1/temperature"),
            packet_id: Some(7),
            properties: Properties {
                message_expiry_interval: Some(60),
                ..Default::default()
            },
            // 200 bytes make the remaining length take two bytes.
            payload: Bytes::from(vec![0x5A; 200]),
        }),
        Packet::PubAck(Ack::new(7)),
        Packet::Subscribe(Subscribe {
            packet_id: 8,
            subscriptions: vec![Subscription {
                filter: ByteStr::from("sensors/+/temperature"),
                options: SubscriptionOptions::with_qos(QoS::ExactlyOnce),
            }],
            properties: Properties {
                subscription_identifiers: vec![3],
                ..Default::default()
            },
        }),
        Packet::PingResp,
    ];
    let mut stream = BytesMut::new();
    for packet in &packets {
        encode_packet(packet, version, &mut stream);
    }
    assert_eq!(decode_byte_by_byte(&stream, version), packets);
}

proptest! {
    #[test]
    fn split_feed_random_stream(
        (version, packets) in proptest::sample::select(&VERSIONS[..])
            .prop_flat_map(|version| (Just(version), vec(packet(version), 1..6)))
    ) {
        let mut stream = BytesMut::new();
        for packet in &packets {
            encode_packet(packet, version, &mut stream);
        }
        prop_assert_eq!(decode_byte_by_byte(&stream, version), packets);
    }

    /// Every proper prefix of a packet returns `Ok(None)` and leaves the buffer as it was.
    #[test]
    fn prefix_waits_untouched((version, packet) in versioned_packet()) {
        let mut encoded = BytesMut::new();
        encode_packet(&packet, version, &mut encoded);
        for len in 0..encoded.len() {
            let mut buf = BytesMut::from(&encoded[..len]);
            prop_assert_eq!(decode_packet(&mut buf, version, u32::MAX), Ok(None));
            prop_assert_eq!(&buf[..], &encoded[..len]);
        }
    }
}

/// Decodes `bytes` with every entry point; only returns, never panics, whatever the input.
fn decode_everything(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    if let Ok(None) = decode_connect(&mut buf, u32::MAX) {
        assert_eq!(&buf[..], bytes, "Ok(None) changed the buffer");
    }
    for version in VERSIONS {
        for max_packet_size in [u32::MAX, 64] {
            let mut buf = BytesMut::from(bytes);
            // Bounded: each successful call consumes at least one byte.
            while !buf.is_empty() {
                let before = buf.len();
                match decode_packet(&mut buf, version, max_packet_size) {
                    Ok(Some(_)) => assert!(buf.len() < before, "a packet consumed no bytes"),
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "Ok(None) changed the buffer");
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::case_count(4000)))]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        decode_everything(&bytes);
    }

    /// Valid packets with one byte changed and the tail cut reach deeper into the decoder than
    /// random bytes do.
    #[test]
    fn mutated_packets_never_panic(
        (version, packet) in versioned_packet(),
        position in any::<proptest::sample::Index>(),
        value in any::<u8>(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut encoded = BytesMut::new();
        encode_packet(&packet, version, &mut encoded);
        let mut bytes = encoded.to_vec();
        let index = position.index(bytes.len());
        bytes[index] = value;
        decode_everything(&bytes);
        let len = cut.index(bytes.len() + 1);
        decode_everything(&bytes[..len]);
    }
}
