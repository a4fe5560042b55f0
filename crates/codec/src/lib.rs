//! Switchyard's MQTT codec: packet types, a strict decoder and an encoder for MQTT 3.1, 3.1.1 and
//! 5.0, with no I/O, so the broker, the global endpoint, the tests and the load generator share it.
//!
//! # Layout
//!
//! - [`packet`]: the packet types, one set for all protocol versions.
//! - `decode`: [`decode_connect`] for the first packet of a connection and [`decode_packet`] for
//!   the rest, each consuming one whole packet from a buffer or asking for more bytes.
//! - `encode`: [`encode_packet`], writing one packet into a buffer.
//! - [`error`]: [`DecodeError`], which maps each violation to the reason code it calls for.
//! - [`topic`]: topic name and topic filter rules, shared subscriptions and filter matching.
//! - `properties`: the MQTT 5.0 property table; `varint`, `reader` and `writer`: wire primitives.

pub mod error;
pub mod packet;
pub mod topic;

mod decode;
mod encode;
mod properties;
mod reader;
mod varint;
mod writer;

#[cfg(test)]
mod tests;

pub use decode::{decode_connect, decode_packet};
pub use encode::{encode_packet, encoded_len};
pub use error::DecodeError;
pub use packet::*;
