//! Output primitives shared by the packet and property encoders.
//!
//! Every encoder writes through [`Sink`], once into a [`Counter`] to learn the remaining length
//! and once into the output buffer, so `encoded_len` and `encode_packet` cannot disagree.

use bytes::{BufMut, BytesMut};

use crate::varint;

/// Destination of encoded bytes.
pub(crate) trait Sink {
    fn put_u8(&mut self, value: u8);
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u16(&mut self, value: u16) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_be_bytes());
    }

    fn put_varint(&mut self, value: u32)
    where
        Self: Sized,
    {
        varint::encode(value, self);
    }

    /// Writes binary data with its two-byte length prefix.
    ///
    /// Data longer than 65,535 bytes cannot be represented, so only the first 65,535 bytes are
    /// written and the frame stays well-formed. Decoded packets never exceed that limit.
    fn put_binary(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(usize::from(u16::MAX));
        self.put_u16(len as u16);
        self.put_slice(&bytes[..len]);
    }

    /// Writes a UTF-8 string with its two-byte length prefix, truncated like [`Sink::put_binary`].
    ///
    /// NOTE: truncating at 65,535 bytes can split a multi-byte character, which the peer then
    /// rejects as malformed. Strings that came from the decoder are always short enough.
    fn put_string(&mut self, value: &str) {
        self.put_binary(value.as_bytes());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, value: u8) {
        BufMut::put_u8(self, value);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that only counts the bytes written to it.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _value: u8) {
        self.0 = self.0.saturating_add(1);
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

/// Returns the number of bytes `write` puts into a sink.
pub(crate) fn count(write: impl FnOnce(&mut Counter)) -> usize {
    let mut counter = Counter::default();
    write(&mut counter);
    counter.0
}
