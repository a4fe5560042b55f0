//! Bounds-checked reading of one packet body.
//!
//! A [`Reader`] covers exactly the bytes of one packet (or of one property list inside it), so no
//! field can extend into the next packet: a length that runs past the end is a malformed packet.
//! Slices it returns share the read buffer instead of copying.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::packet::ByteStr;
use crate::varint;

/// Cursor over the bytes of one packet body.
pub(crate) struct Reader {
    data: Bytes,
    position: usize,
}

impl Reader {
    pub(crate) fn new(data: Bytes) -> Reader {
        Reader { data, position: 0 }
    }

    /// Returns the number of unread bytes.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.position)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Returns the next `len` bytes as a shared slice and advances past them.
    pub(crate) fn read_bytes(&mut self, len: usize, field: &str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::malformed(format!(
                "{field} needs {len} bytes but only {} remain in the packet",
                self.remaining()
            )));
        }
        let end = self.position + len;
        let slice = self.data.slice(self.position..end);
        self.position = end;
        Ok(slice)
    }

    /// Returns all unread bytes, for a PUBLISH payload.
    pub(crate) fn read_rest(&mut self) -> Bytes {
        let rest = self.data.slice(self.position.min(self.data.len())..);
        self.position = self.data.len();
        rest
    }

    pub(crate) fn read_u8(&mut self, field: &str) -> Result<u8, DecodeError> {
        let bytes = self.read_array::<1>(field)?;
        Ok(bytes[0])
    }

    pub(crate) fn read_u16(&mut self, field: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.read_array(field)?))
    }

    pub(crate) fn read_u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.read_array(field)?))
    }

    fn read_array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], DecodeError> {
        let bytes = self.read_bytes(N, field)?;
        let mut array = [0; N];
        array.copy_from_slice(&bytes);
        Ok(array)
    }

    /// Reads a variable byte integer; one that runs past the end of the packet is malformed.
    pub(crate) fn read_varint(&mut self, field: &str) -> Result<u32, DecodeError> {
        let unread = self.data.get(self.position..).unwrap_or_default();
        match varint::decode(unread) {
            Ok(Some((value, len))) => {
                self.position += len;
                Ok(value)
            }
            Ok(None) => Err(DecodeError::malformed(format!(
                "{field} runs past the end of the packet"
            ))),
            Err(error) => Err(DecodeError::malformed(format!("{field}: {}", error.detail))),
        }
    }

    /// Reads binary data with a two-byte length prefix.
    pub(crate) fn read_binary(&mut self, field: &str) -> Result<Bytes, DecodeError> {
        let len = self.read_u16(field)?;
        self.read_bytes(usize::from(len), field)
    }

    /// Reads a UTF-8 string with a two-byte length prefix.
    ///
    /// Rejects ill-formed UTF-8 and UTF-16 surrogate code points [MQTT-1.5.3-1, MQTT-1.5.4-1] and
    /// U+0000 [MQTT-1.5.3-2, MQTT-1.5.4-2] as malformed. Rust's UTF-8 validation already rejects
    /// encoded surrogates (ED A0 80 to ED BF BF) and overlong forms.
    pub(crate) fn read_string(&mut self, field: &str) -> Result<ByteStr, DecodeError> {
        let bytes = self.read_binary(field)?;
        if let Err(error) = std::str::from_utf8(&bytes) {
            return Err(DecodeError::malformed(format!(
                "{field} is not valid UTF-8 (invalid byte at offset {})",
                error.valid_up_to()
            )));
        }
        if bytes.contains(&0) {
            return Err(DecodeError::malformed(format!("{field} contains U+0000")));
        }
        Ok(ByteStr::from_validated(bytes))
    }

    /// Splits off the next `len` bytes as a reader of their own, for a property list.
    pub(crate) fn split(&mut self, len: usize, field: &str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.read_bytes(len, field)?))
    }

    /// Rejects unread bytes after the last field of a packet as malformed.
    pub(crate) fn expect_end(&self, packet: &str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            1 => Err(DecodeError::malformed(format!(
                "{packet} has 1 unexpected byte after its last field"
            ))),
            count => Err(DecodeError::malformed(format!(
                "{packet} has {count} unexpected bytes after its last field"
            ))),
        }
    }
}
