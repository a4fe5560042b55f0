//! Round trips: every valid packet decodes to itself after encoding.

use bytes::BytesMut;
use proptest::prelude::*;

use super::strategies::{packet, versioned_packet};
use crate::{
    Packet, ProtocolVersion, ReasonCode, decode_connect, decode_packet, encode_packet, encoded_len,
};

fn check_round_trip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut encoded = BytesMut::new();
    encode_packet(packet, version, &mut encoded);
    prop_assert_eq!(encoded.len(), encoded_len(packet, version));

    let mut buf = encoded.clone();
    let decoded = decode_packet(&mut buf, version, u32::MAX);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty(), "decode_packet left {} bytes", buf.len());

    if let Packet::Connect(connect) = packet {
        let mut buf = encoded.clone();
        let decoded = decode_connect(&mut buf, u32::MAX);
        prop_assert_eq!(decoded, Ok(Some((**connect).clone())));
        prop_assert!(buf.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(super::case_count(1500)))]

    #[test]
    fn round_trip_v3_1(packet in packet(ProtocolVersion::V3_1)) {
        check_round_trip(&packet, ProtocolVersion::V3_1)?;
    }

    #[test]
    fn round_trip_v3_1_1(packet in packet(ProtocolVersion::V3_1_1)) {
        check_round_trip(&packet, ProtocolVersion::V3_1_1)?;
    }

    #[test]
    fn round_trip_v5(packet in packet(ProtocolVersion::V5)) {
        check_round_trip(&packet, ProtocolVersion::V5)?;
    }
}

proptest! {
    /// A limit equal to the packet size accepts it, one byte less rejects it.
    #[test]
    fn max_packet_size_is_inclusive((version, packet) in versioned_packet()) {
        let mut encoded = BytesMut::new();
        encode_packet(&packet, version, &mut encoded);
        let size = u32::try_from(encoded.len()).unwrap();

        let mut buf = encoded.clone();
        prop_assert_eq!(decode_packet(&mut buf, version, size), Ok(Some(packet.clone())));

        let mut buf = encoded.clone();
        let error = decode_packet(&mut buf, version, size - 1).unwrap_err();
        prop_assert_eq!(error.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    }
}
