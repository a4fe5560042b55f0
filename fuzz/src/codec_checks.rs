//! Properties of the codec that the fuzz targets check on every input.
//!
//! The corpus replay test `crates/codec/tests/fuzz_corpus.rs` includes this file with `#[path]`,
//! so the ordinary test suite runs the same checks on the committed corpus without cargo-fuzz.
//! For that reason it uses only `switchyard_codec`, `bytes` and `std`. A failed check panics
//! with the protocol version and size limit in its message, and libFuzzer reports the panic as a
//! crash with the input that caused it.

use bytes::BytesMut;
use switchyard_codec::{
    DecodeError, Packet, ProtocolVersion, ReasonCode, decode_connect, decode_packet, encode_packet,
    encoded_len,
};

/// Every protocol version the decoder serves.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// A maximum packet size smaller than most CONNECT and PUBLISH packets, so the 0x95 Packet Too
/// Large path runs on ordinary inputs.
pub const SMALL_MAX_PACKET_SIZE: u32 = 64;

/// No limit beyond the protocol's own.
pub const LARGE_MAX_PACKET_SIZE: u32 = u32::MAX;

/// The reason codes [`DecodeError`] documents: 0x81, 0x82, 0x84, 0x90, 0x94 and 0x95.
const DECODE_ERROR_REASONS: [ReasonCode; 6] = [
    ReasonCode::MALFORMED_PACKET,
    ReasonCode::PROTOCOL_ERROR,
    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
    ReasonCode::TOPIC_NAME_INVALID,
    ReasonCode::TOPIC_ALIAS_INVALID,
    ReasonCode::PACKET_TOO_LARGE,
];

/// An input of the split-feed targets, cut into the chunk lengths and the byte stream.
///
/// Layout: byte 0 modulo 16 is the number of chunk lengths that follow, one byte each (0 is an
/// empty chunk). The remaining bytes are the stream, and the part of it the lengths do not cover
/// is the last chunk. The fuzzer thus chooses the split points itself.
#[derive(Clone, Copy, Debug)]
pub struct SplitInput<'a> {
    pub chunk_lens: &'a [u8],
    pub stream: &'a [u8],
}

impl<'a> SplitInput<'a> {
    /// Parses the layout above; every byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> SplitInput<'a> {
        let Some((&count, rest)) = data.split_first() else {
            return SplitInput {
                chunk_lens: &[],
                stream: &[],
            };
        };
        let count = usize::from(count % 16).min(rest.len());
        let (chunk_lens, stream) = rest.split_at(count);
        SplitInput { chunk_lens, stream }
    }

    /// Returns the stream cut at the chosen split points, with the uncovered rest as last chunk.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut chunks = Vec::with_capacity(self.chunk_lens.len() + 1);
        let mut rest = self.stream;
        for &len in self.chunk_lens {
            let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks.push(rest);
        chunks
    }
}

/// Result of decoding a stream: the packets in order and how decoding stopped.
#[derive(Debug, PartialEq)]
pub struct StreamOutcome {
    pub packets: Vec<Packet>,
    /// The size in bytes of each packet in `packets`, fixed header included.
    pub packet_sizes: Vec<usize>,
    /// The error that stopped decoding, if any.
    pub error: Option<DecodeError>,
    /// Bytes of an incomplete last packet, when decoding stopped for lack of input.
    pub incomplete: Option<Vec<u8>>,
}

/// Decodes `chunks` as one connection of `version` would receive them: after each chunk is
/// appended, packets are decoded until the decoder returns `Ok(None)` or an error.
///
/// Checks that `Ok(None)` leaves the buffer untouched, that a decoded packet consumes exactly its
/// own bytes from the front of the buffer, and that no packet exceeds `max_packet_size`.
pub fn decode_stream(
    chunks: &[&[u8]],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> StreamOutcome {
    let stream: Vec<u8> = chunks.concat();
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    let mut appended = 0;
    let mut outcome = StreamOutcome {
        packets: Vec::new(),
        packet_sizes: Vec::new(),
        error: None,
        incomplete: None,
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        appended += chunk.len();
        loop {
            let before = buf.len();
            let result = decode_packet(&mut buf, version, max_packet_size);
            match result {
                Ok(Some(packet)) => {
                    let size = before - buf.len();
                    assert!(size >= 2, "{version:?}: a packet consumed {size} bytes");
                    assert!(
                        size as u64 <= u64::from(max_packet_size),
                        "{version:?}: a packet of {size} bytes passed the limit of {max_packet_size}"
                    );
                    consumed += size;
                    outcome.packets.push(packet);
                    outcome.packet_sizes.push(size);
                }
                Ok(None) => {
                    assert_eq!(
                        before,
                        buf.len(),
                        "{version:?}: Ok(None) changed the buffer"
                    );
                    break;
                }
                Err(error) => {
                    check_error(&error);
                    outcome.error = Some(error);
                    return outcome;
                }
            }
            assert_eq!(
                &buf[..],
                &stream[consumed..appended],
                "{version:?}: the buffer does not hold the undecoded bytes"
            );
        }
    }
    outcome.incomplete = Some(buf.to_vec());
    outcome
}

/// Checks that an error carries a documented reason code and formats.
fn check_error(error: &DecodeError) {
    assert!(
        DECODE_ERROR_REASONS.contains(&error.reason_code()),
        "undocumented reason code in {error:?}"
    );
    assert!(!error.to_string().is_empty());
}

/// Checks `decode_packet` on one input of the [`SplitInput`] layout, for every version and for
/// a small and a large maximum packet size.
///
/// The stream must decode to the same packets and the same final error or incomplete tail
/// whether it arrives whole, in the chosen chunks or one byte at a time. With the small limit
/// the outcome must be the one of the large limit, or a prefix of its packets followed by 0x95.
pub fn check_decode_packet(data: &[u8]) {
    let input = SplitInput::parse(data);
    let chunks = input.chunks();
    let bytes: Vec<&[u8]> = input.stream.chunks(1).collect();
    for version in VERSIONS {
        let mut outcomes = Vec::with_capacity(2);
        for max_packet_size in [SMALL_MAX_PACKET_SIZE, LARGE_MAX_PACKET_SIZE] {
            let whole = decode_stream(&[input.stream], version, max_packet_size);
            let split = decode_stream(&chunks, version, max_packet_size);
            assert_eq!(
                whole, split,
                "{version:?}, limit {max_packet_size}: chunks {:?} disagree with the whole stream",
                input.chunk_lens
            );
            let byte_by_byte = decode_stream(&bytes, version, max_packet_size);
            assert_eq!(
                whole, byte_by_byte,
                "{version:?}, limit {max_packet_size}: single bytes disagree with the whole stream"
            );
            outcomes.push(whole);
        }
        check_limit_outcomes(version, &outcomes[0], &outcomes[1]);
    }
}

/// Checks that the small limit changes nothing but a 0x95 error in place of a larger packet.
fn check_limit_outcomes(version: ProtocolVersion, small: &StreamOutcome, large: &StreamOutcome) {
    if small == large {
        return;
    }
    let count = small.packets.len();
    assert!(
        large.packets.len() >= count && large.packets[..count] == small.packets[..],
        "{version:?}: the small limit decoded packets the large limit did not"
    );
    let reason = small.error.as_ref().map(DecodeError::reason_code);
    assert_eq!(
        reason,
        Some(ReasonCode::PACKET_TOO_LARGE),
        "{version:?}: the small limit failed differently from the large one: {:?}",
        small.error
    );
}

/// Checks `decode_connect` on raw bytes, for a small and a large maximum packet size.
///
/// The result must not change when the bytes arrive one at a time. A decoded CONNECT must
/// consume exactly its own bytes, and `decode_packet` must agree with `decode_connect` on any
/// input that starts with a CONNECT fixed header.
pub fn check_decode_connect(data: &[u8]) {
    for max_packet_size in [SMALL_MAX_PACKET_SIZE, LARGE_MAX_PACKET_SIZE] {
        let mut buf = BytesMut::from(data);
        let whole = decode_connect(&mut buf, max_packet_size);
        match &whole {
            Ok(Some(_)) => {
                let size = data.len() - buf.len();
                assert!(size >= 2, "a CONNECT consumed {size} bytes");
                assert!(size as u64 <= u64::from(max_packet_size));
                assert_eq!(
                    &buf[..],
                    &data[size..],
                    "the buffer lost bytes after CONNECT"
                );
            }
            Ok(None) => assert_eq!(&buf[..], data, "Ok(None) changed the buffer"),
            Err(error) => check_error(error),
        }

        assert_eq!(
            decode_connect_byte_by_byte(data, max_packet_size),
            whole,
            "limit {max_packet_size}: single bytes disagree with the whole input"
        );

        if data.first().is_some_and(|&byte| byte >> 4 == 1) {
            for version in VERSIONS {
                let mut buf = BytesMut::from(data);
                let packet = decode_packet(&mut buf, version, max_packet_size);
                let expected = whole
                    .clone()
                    .map(|connect| connect.map(|connect| Packet::Connect(Box::new(connect))));
                assert_eq!(
                    packet, expected,
                    "{version:?}, limit {max_packet_size}: decode_packet disagrees with decode_connect"
                );
            }
        }
    }
}

fn decode_connect_byte_by_byte(
    data: &[u8],
    max_packet_size: u32,
) -> Result<Option<switchyard_codec::Connect>, DecodeError> {
    let mut buf = BytesMut::new();
    for &byte in data {
        buf.extend_from_slice(&[byte]);
        let before = buf.len();
        let result = decode_connect(&mut buf, max_packet_size);
        match result {
            Ok(None) => assert_eq!(before, buf.len(), "Ok(None) changed the buffer"),
            other => return other,
        }
    }
    decode_connect(&mut buf, max_packet_size)
}

/// Checks that every packet decoded from raw bytes, in every version, encodes to bytes that
/// decode to an equal packet.
///
/// The encoding may be shorter than the input, because the encoder writes the short forms of
/// 5.0 acknowledgements, but never longer, so a forwarded packet stays within the size limit it
/// arrived under. `encoded_len` must match what `encode_packet` writes, and a limit equal to the
/// encoded size must accept the packet while one byte less rejects it with 0x95.
pub fn check_roundtrip(data: &[u8]) {
    for version in VERSIONS {
        let outcome = decode_stream(&[data], version, LARGE_MAX_PACKET_SIZE);
        for (packet, &size) in outcome.packets.iter().zip(&outcome.packet_sizes) {
            check_packet_roundtrip(packet, size, version);
        }
    }
}

fn check_packet_roundtrip(packet: &Packet, input_size: usize, version: ProtocolVersion) {
    let mut encoded = BytesMut::new();
    encode_packet(packet, version, &mut encoded);
    assert_eq!(
        encoded.len(),
        encoded_len(packet, version),
        "{version:?}: encoded_len disagrees with encode_packet for {packet:?}"
    );
    assert!(
        encoded.len() <= input_size,
        "{version:?}: {packet:?} arrived in {input_size} bytes and encodes to {}: {:02X?}",
        encoded.len(),
        &encoded[..]
    );

    let mut buf = encoded.clone();
    let decoded = decode_packet(&mut buf, version, LARGE_MAX_PACKET_SIZE);
    assert_eq!(
        decoded,
        Ok(Some(packet.clone())),
        "{version:?}: the encoding {:02X?} does not decode to the packet",
        &encoded[..]
    );
    assert!(
        buf.is_empty(),
        "{version:?}: {} bytes left after the packet",
        buf.len()
    );

    let size = u32::try_from(encoded.len()).expect("fuzz inputs are far below 4 GiB");
    let mut buf = encoded.clone();
    let at_limit = decode_packet(&mut buf, version, size);
    assert_eq!(
        at_limit,
        Ok(Some(packet.clone())),
        "{version:?}: a limit of {size} rejected it"
    );
    let mut buf = encoded.clone();
    let below_limit = decode_packet(&mut buf, version, size - 1);
    let reason = below_limit.map_err(|error| error.reason_code());
    assert_eq!(
        reason,
        Err(ReasonCode::PACKET_TOO_LARGE),
        "{version:?}: limit {}",
        size - 1
    );

    if let Packet::Connect(connect) = packet {
        let mut buf = encoded.clone();
        let decoded = decode_connect(&mut buf, LARGE_MAX_PACKET_SIZE);
        assert_eq!(
            decoded,
            Ok(Some((**connect).clone())),
            "decode_connect of {encoded:02X?}"
        );
    }
}
