//! Variable byte integers: 7 bits per byte, least significant group first, the high bit of each
//! byte set when another byte follows, at most four bytes (MQTT 5.0 section 1.5.5, MQTT 3.1.1
//! section 2.2.3 for the remaining length).

use crate::error::DecodeError;
use crate::writer::Sink;

/// Largest value that fits in four bytes, 268,435,455.
pub(crate) const MAX_VALUE: u32 = 268_435_455;

/// Decodes a variable byte integer from the start of `bytes`.
///
/// Returns the value and the number of bytes it used, or `Ok(None)` when `bytes` ends before the
/// last byte of the integer. Rejects a fifth byte and an encoding that uses more bytes than the
/// value needs [MQTT-1.5.5-1] as malformed.
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            // A final byte of zero after continuation bytes adds nothing, so a shorter encoding
            // of the same value exists.
            if index > 0 && byte == 0 {
                return Err(DecodeError::malformed(
                    "variable byte integer is not encoded in the minimum number of bytes",
                ));
            }
            return Ok(Some((value, index + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::malformed(
            "variable byte integer is longer than 4 bytes",
        ));
    }
    Ok(None)
}

/// Returns the number of bytes the encoding of `value` takes, 1 to 4.
///
/// Values above [`MAX_VALUE`] count as 4 bytes, matching what [`encode`] writes for them.
pub(crate) fn encoded_len(value: u32) -> usize {
    match value {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        _ => 4,
    }
}

/// Writes `value` in the minimum number of bytes.
///
/// Values above [`MAX_VALUE`] cannot be represented and are written as [`MAX_VALUE`], so the
/// output stays a well-formed integer. Callers keep lengths and identifiers within range.
pub(crate) fn encode(value: u32, out: &mut impl Sink) {
    let mut rest = value.min(MAX_VALUE);
    loop {
        let low = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            out.put_u8(low);
            return;
        }
        out.put_u8(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn decode_boundary_values() {
        let cases: [(&[u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], MAX_VALUE),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                decode(bytes),
                Ok(Some((expected, bytes.len()))),
                "{bytes:02X?}"
            );
        }
    }

    #[test]
    fn decode_rejects_fifth_byte() {
        let error = decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap_err();
        assert!(error.is_malformed());
        // Four continuation bytes are already an error, before the fifth byte arrives.
        let error = decode(&[0x80, 0x80, 0x80, 0x80]).unwrap_err();
        assert!(error.is_malformed());
    }

    #[test]
    fn decode_rejects_non_minimal() {
        for bytes in [
            &[0x80, 0x00][..],
            &[0x81, 0x00],
            &[0xFF, 0x80, 0x00],
            &[0x80, 0x80, 0x80, 0x00],
        ] {
            let error = decode(bytes).unwrap_err();
            assert!(error.is_malformed(), "{bytes:02X?}");
        }
    }

    #[test]
    fn decode_waits_for_last_byte() {
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0x80]), Ok(None));
        assert_eq!(decode(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }

    #[test]
    fn encode_round_trips() {
        for value in [
            0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VALUE,
        ] {
            let mut out = BytesMut::new();
            encode(value, &mut out);
            assert_eq!(out.len(), encoded_len(value), "length of {value}");
            assert_eq!(decode(&out), Ok(Some((value, out.len()))), "value {value}");
        }
    }
}
