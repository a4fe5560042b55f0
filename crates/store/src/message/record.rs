//! The binary form of each record value, with a CRC-32 that covers the value's format byte,
//! the record's key and the body.
//!
//! A value is one format byte ([`Format`]), the CRC-32 (IEEE) in little endian, then the body.
//! Integers are little endian, strings and byte strings carry a `u32` length prefix, and an
//! optional integer is a presence byte followed by the integer. A body must be consumed exactly,
//! so a truncated or extended value fails to decode.
//!
//! Values of format 1, whose checksum leaves the format byte out, are still read, so a store
//! written by an earlier version loads as it was.

use super::{
    InflightMessage, SessionOrigin, SessionRecord, StoredMessage, StoredSubscription, StoredWill,
    UnixMillis,
};

/// The format of a value, its first byte. Every value is written in [`Format::CURRENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The first format. The checksum covers the key and the body, and a session body ends
    /// with its subscriptions.
    V1 = 1,
    /// The checksum also covers the format byte, and a session body ends with the
    /// [`SessionOrigin`] of the session's last connection. The other bodies are as in `V1`.
    V2 = 2,
}

impl Format {
    /// The format this version writes.
    pub(crate) const CURRENT: Format = Format::V2;

    fn from_byte(byte: u8) -> Option<Format> {
        match byte {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }
}

/// The tag of [`SessionOrigin::Region`] in a session body.
const ORIGIN_REGION: u8 = 0;
/// The tag of [`SessionOrigin::Global`] in a session body, followed by the group id.
const ORIGIN_GLOBAL: u8 = 1;

/// The kind of a record, stored as the `kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Session = 0,
    Queued = 1,
    Inflight = 2,
    IncomingQos2 = 3,
    Will = 4,
    Retained = 5,
}

impl Kind {
    pub(crate) fn from_column(value: i64) -> Option<Kind> {
        match value {
            0 => Some(Kind::Session),
            1 => Some(Kind::Queued),
            2 => Some(Kind::Inflight),
            3 => Some(Kind::IncomingQos2),
            4 => Some(Kind::Will),
            5 => Some(Kind::Retained),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Session => "session",
            Kind::Queued => "queued",
            Kind::Inflight => "inflight",
            Kind::IncomingQos2 => "incoming-qos2",
            Kind::Will => "will",
            Kind::Retained => "retained",
        }
    }
}

/// The key of a record: instance id, kind, name (client id or topic) and sequence number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) kind: Kind,
    pub(crate) name: &'a str,
    pub(crate) seq: u64,
}

impl Key<'_> {
    /// Formats the key as `instance/kind/name/seq` for error reports.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.instance_id,
            self.kind.name(),
            self.name,
            self.seq
        )
    }

    fn checksum(&self, format: Format, body: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        // Format 1 left its format byte out of the checksum, so a damaged byte could make a
        // value read as another format. Later formats include it.
        if format != Format::V1 {
            hasher.update(&[format as u8]);
        }
        for part in [self.instance_id.as_bytes(), self.name.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(&[self.kind as u8]);
        hasher.update(&self.seq.to_le_bytes());
        hasher.update(body);
        hasher.finalize()
    }
}

/// Wraps an encoded body into a value of the current format with its checksum.
pub(crate) fn seal(key: &Key<'_>, body: Vec<u8>) -> Vec<u8> {
    let format = Format::CURRENT;
    let mut value = Vec::with_capacity(body.len() + 5);
    value.push(format as u8);
    value.extend_from_slice(&key.checksum(format, &body).to_le_bytes());
    value.extend_from_slice(&body);
    value
}

/// The body of a value whose checksum matched, with the format it was written in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Body<'v> {
    pub(crate) format: Format,
    pub(crate) bytes: &'v [u8],
}

/// Checks a value's format byte and checksum and returns its body.
pub(crate) fn open<'v>(key: &Key<'_>, value: &'v [u8]) -> Result<Body<'v>, String> {
    if value.len() < 5 {
        return Err(format!(
            "value of {} bytes is shorter than its header",
            value.len()
        ));
    }
    let Some(format) = Format::from_byte(value[0]) else {
        return Err(format!("unknown format byte {}", value[0]));
    };
    let stored = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    let bytes = &value[5..];
    let computed = key.checksum(format, bytes);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    Ok(Body { format, bytes })
}

#[derive(Default)]
pub(crate) struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }

    fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    fn bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }

    fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    fn optional_u32(&mut self, value: Option<u32>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.u32(value);
        }
    }

    fn optional_u64(&mut self, value: Option<u64>) {
        self.bool(value.is_some());
        if let Some(value) = value {
            self.u64(value);
        }
    }

    fn bytes(&mut self, value: &[u8]) {
        // The caller's limits keep every field far below 4 GiB (an MQTT packet is at most
        // 256 MiB), so the length always fits.
        self.u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        self.bytes.extend_from_slice(value);
    }

    pub(crate) fn message(&mut self, message: &StoredMessage) {
        self.bytes(message.topic.as_bytes());
        self.bytes(&message.payload);
        self.u8(message.qos);
        self.bool(message.retain);
        self.bytes(&message.properties);
        self.optional_u64(message.expires_at);
    }

    pub(crate) fn session(&mut self, session: &SessionRecord) {
        self.u8(session.protocol_version);
        self.u32(session.session_expiry_interval);
        self.optional_u64(session.expires_at);
        self.u32(u32::try_from(session.subscriptions.len()).unwrap_or(u32::MAX));
        for subscription in &session.subscriptions {
            self.bytes(subscription.filter.as_bytes());
            self.u8(subscription.qos);
            self.bool(subscription.no_local);
            self.bool(subscription.retain_as_published);
            self.u8(subscription.retain_handling);
            self.optional_u32(subscription.subscription_identifier);
        }
        match &session.origin {
            SessionOrigin::Region => self.u8(ORIGIN_REGION),
            SessionOrigin::Global { group } => {
                self.u8(ORIGIN_GLOBAL);
                self.bytes(group.as_bytes());
            }
        }
    }

    pub(crate) fn inflight(&mut self, inflight: &InflightMessage) {
        self.message(&inflight.message);
        self.bool(inflight.pubrel_sent);
    }

    pub(crate) fn will(&mut self, will: &StoredWill) {
        self.message(&will.message);
        self.u32(will.delay_interval);
        self.optional_u64(will.publish_at);
    }
}

pub(crate) struct Decoder<'a> {
    format: Format,
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(body: Body<'a>) -> Decoder<'a> {
        Decoder {
            format: body.format,
            bytes: body.bytes,
        }
    }

    /// Fails unless every byte of the body was read.
    pub(crate) fn finish(self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the body",
                self.bytes.len()
            ))
        }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err(format!(
                "body ends early: needed {count} more bytes, found {}",
                self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("invalid boolean byte {other}")),
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    fn optional_u32(&mut self) -> Result<Option<u32>, String> {
        if self.bool()? {
            Ok(Some(self.u32()?))
        } else {
            Ok(None)
        }
    }

    fn optional_u64(&mut self) -> Result<Option<UnixMillis>, String> {
        if self.bool()? {
            Ok(Some(self.u64()?))
        } else {
            Ok(None)
        }
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let length = self.u32()? as usize;
        Ok(self.take(length)?.to_vec())
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|_| "string is not valid UTF-8".to_owned())
    }

    pub(crate) fn message(&mut self) -> Result<StoredMessage, String> {
        Ok(StoredMessage {
            topic: self.string()?,
            payload: self.bytes()?,
            qos: self.u8()?,
            retain: self.bool()?,
            properties: self.bytes()?,
            expires_at: self.optional_u64()?,
        })
    }

    pub(crate) fn session(&mut self, client_id: &str) -> Result<SessionRecord, String> {
        let protocol_version = self.u8()?;
        let session_expiry_interval = self.u32()?;
        let expires_at = self.optional_u64()?;
        let count = self.u32()?;
        let mut subscriptions = Vec::new();
        for _ in 0..count {
            subscriptions.push(StoredSubscription {
                filter: self.string()?,
                qos: self.u8()?,
                no_local: self.bool()?,
                retain_as_published: self.bool()?,
                retain_handling: self.u8()?,
                subscription_identifier: self.optional_u32()?,
            });
        }
        let origin = match self.format {
            // Format 1 did not store the origin. See `SessionOrigin::Region` for why that is
            // the default.
            Format::V1 => SessionOrigin::Region,
            Format::V2 => self.origin()?,
        };
        Ok(SessionRecord {
            client_id: client_id.to_owned(),
            protocol_version,
            session_expiry_interval,
            expires_at,
            subscriptions,
            origin,
        })
    }

    fn origin(&mut self) -> Result<SessionOrigin, String> {
        match self.u8()? {
            ORIGIN_REGION => Ok(SessionOrigin::Region),
            ORIGIN_GLOBAL => Ok(SessionOrigin::Global {
                group: self.string()?,
            }),
            other => Err(format!("unknown session origin tag {other}")),
        }
    }

    pub(crate) fn inflight(&mut self) -> Result<InflightMessage, String> {
        Ok(InflightMessage {
            message: self.message()?,
            pubrel_sent: self.bool()?,
        })
    }

    pub(crate) fn will(&mut self) -> Result<StoredWill, String> {
        Ok(StoredWill {
            message: self.message()?,
            delay_interval: self.u32()?,
            publish_at: self.optional_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, seq: u64) -> Key<'_> {
        Key {
            instance_id: "mqtt-1",
            kind: Kind::Queued,
            name,
            seq,
        }
    }

    fn sealed_message() -> Vec<u8> {
        let mut encoder = Encoder::default();
        encoder.message(&StoredMessage {
            topic: "a/b".to_owned(),
            payload: vec![1, 2, 3],
            qos: 2,
            retain: true,
            properties: vec![9],
            expires_at: Some(5),
        });
        seal(&key("dev1", 3), encoder.finish())
    }

    #[test]
    fn message_round_trips() {
        let value = sealed_message();
        let body = open(&key("dev1", 3), &value).unwrap();
        let mut decoder = Decoder::new(body);
        let message = decoder.message().unwrap();
        decoder.finish().unwrap();
        assert_eq!(message.topic, "a/b");
        assert_eq!(message.payload, vec![1, 2, 3]);
        assert_eq!(message.qos, 2);
        assert!(message.retain);
        assert_eq!(message.properties, vec![9]);
        assert_eq!(message.expires_at, Some(5));
    }

    #[test]
    fn checksum_covers_key() {
        let value = sealed_message();
        assert!(open(&key("dev2", 3), &value).is_err());
        assert!(open(&key("dev1", 4), &value).is_err());
        // The name boundary is part of the checksum, not only the concatenated bytes.
        let shifted = Key {
            instance_id: "mqtt-1d",
            kind: Kind::Queued,
            name: "ev1",
            seq: 3,
        };
        assert!(open(&shifted, &value).is_err());
    }

    #[test]
    fn damaged_values_are_rejected() {
        let value = sealed_message();
        for index in 0..value.len() {
            let mut damaged = value.clone();
            damaged[index] ^= 0x01;
            assert!(open(&key("dev1", 3), &damaged).is_err(), "byte {index}");
        }
        for length in 0..value.len() {
            assert!(
                open(&key("dev1", 3), &value[..length]).is_err(),
                "length {length}"
            );
        }
    }

    #[test]
    fn trailing_bytes_fail_decoding() {
        let mut encoder = Encoder::default();
        encoder.will(&StoredWill {
            message: StoredMessage {
                topic: "t".to_owned(),
                payload: Vec::new(),
                qos: 0,
                retain: false,
                properties: Vec::new(),
                expires_at: None,
            },
            delay_interval: 1,
            publish_at: None,
        });
        let mut bytes = encoder.finish();
        bytes.push(0);
        let mut decoder = Decoder::new(Body {
            format: Format::CURRENT,
            bytes: &bytes,
        });
        decoder.will().unwrap();
        assert!(decoder.finish().is_err());
    }

    fn session_key() -> Key<'static> {
        Key {
            instance_id: "mqtt-1",
            kind: Kind::Session,
            name: "GID_t@@@dev",
            seq: 0,
        }
    }

    fn session_record(origin: SessionOrigin) -> SessionRecord {
        SessionRecord {
            client_id: "GID_t@@@dev".to_owned(),
            protocol_version: 5,
            session_expiry_interval: 3600,
            expires_at: Some(1_700_000_000_000),
            subscriptions: vec![StoredSubscription {
                filter: "sensors/#".to_owned(),
                qos: 1,
                no_local: false,
                retain_as_published: true,
                retain_handling: 2,
                subscription_identifier: Some(7),
            }],
            origin,
        }
    }

    fn decode_session(value: &[u8]) -> Result<SessionRecord, String> {
        let mut decoder = Decoder::new(open(&session_key(), value)?);
        let session = decoder.session("GID_t@@@dev")?;
        decoder.finish()?;
        Ok(session)
    }

    /// The value of `session_record(SessionOrigin::Region)` as format 1 wrote it, produced by
    /// the encoder of that format and kept unchanged.
    const FORMAT_1_SESSION: [u8; 45] = [
        0x01, 0xb5, 0xda, 0x22, 0x22, 0x05, 0x10, 0x0e, 0x00, 0x00, 0x01, 0x00, 0x68, 0xe5, 0xcf,
        0x8b, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x73, 0x65, 0x6e,
        0x73, 0x6f, 0x72, 0x73, 0x2f, 0x23, 0x01, 0x00, 0x01, 0x02, 0x01, 0x07, 0x00, 0x00, 0x00,
    ];

    /// A queued message `sensors/1` with payload `hi` at QoS 1, under key
    /// `mqtt-1/queued/GID_t@@@dev/9`, as format 1 wrote it.
    const FORMAT_1_QUEUED: [u8; 31] = [
        0x01, 0xde, 0x54, 0x0f, 0xa3, 0x09, 0x00, 0x00, 0x00, 0x73, 0x65, 0x6e, 0x73, 0x6f, 0x72,
        0x73, 0x2f, 0x31, 0x02, 0x00, 0x00, 0x00, 0x68, 0x69, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];

    #[test]
    fn session_round_trips_with_origin() {
        let origins = [
            SessionOrigin::Region,
            SessionOrigin::Global {
                group: "global".to_owned(),
            },
        ];
        for origin in origins {
            let record = session_record(origin);
            let mut encoder = Encoder::default();
            encoder.session(&record);
            let value = seal(&session_key(), encoder.finish());
            assert_eq!(value[0], Format::CURRENT as u8);
            assert_eq!(decode_session(&value), Ok(record));
        }
    }

    #[test]
    fn format_1_session_loads_as_region() {
        let session = decode_session(&FORMAT_1_SESSION).expect("format 1 still decodes");
        assert_eq!(session, session_record(SessionOrigin::Region));
    }

    #[test]
    fn format_1_message_still_decodes() {
        let key = Key {
            instance_id: "mqtt-1",
            kind: Kind::Queued,
            name: "GID_t@@@dev",
            seq: 9,
        };
        let body = open(&key, &FORMAT_1_QUEUED).expect("format 1 checksum matches");
        assert_eq!(body.format, Format::V1);
        let mut decoder = Decoder::new(body);
        let message = decoder.message().expect("format 1 message decodes");
        decoder.finish().expect("body consumed exactly");
        assert_eq!(message.topic, "sensors/1");
        assert_eq!(message.payload, b"hi");
        assert_eq!(message.qos, 1);
        assert!(!message.retain);
        assert_eq!(message.expires_at, None);
    }

    #[test]
    fn checksum_covers_format_byte() {
        let mut encoder = Encoder::default();
        encoder.message(&StoredMessage {
            topic: "t".to_owned(),
            payload: Vec::new(),
            qos: 1,
            retain: false,
            properties: Vec::new(),
            expires_at: None,
        });
        let mut value = seal(&key("dev1", 3), encoder.finish());
        assert!(open(&key("dev1", 3), &value).is_ok());
        // The message body is the same in both formats, so only the checksum can tell.
        value[0] = Format::V1 as u8;
        let error = open(&key("dev1", 3), &value).expect_err("format byte is checked");
        assert!(error.contains("checksum mismatch"), "{error}");
    }

    #[test]
    fn unknown_origin_tag_fails_decoding() {
        let mut encoder = Encoder::default();
        encoder.session(&session_record(SessionOrigin::Region));
        let mut bytes = encoder.finish();
        *bytes.last_mut().expect("origin tag") = 9;
        let value = seal(&session_key(), bytes);
        let error = decode_session(&value).expect_err("tag 9 is unknown");
        assert!(error.contains("unknown session origin tag 9"), "{error}");
    }
}
