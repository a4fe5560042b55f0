//! Will messages: the message a client leaves in CONNECT for the server to publish when the
//! connection ends abnormally.
//!
//! The will belongs to the session, because MQTT 5.0 ties its publication to the session's
//! life as well as the connection's. The session state machine keeps it (`session/will.rs`) and
//! decides when it is due; the instance publishes it like any other message.
//!
//! When a will is published:
//! - at once, when the connection closes without DISCONNECT 0x00: keep-alive expiry, a protocol
//!   violation, a network failure, a stop requested by the server (takeover, DR downgrade,
//!   shutdown), or DISCONNECT 0x04 (disconnect with will message);
//! - with a 5.0 Will Delay Interval, once that interval has passed or the session ends,
//!   whichever comes first. A new connection that resumes the session within the delay cancels
//!   the will [MQTT-3.1.2-8 in 5.0];
//! - never after DISCONNECT 0x00, which deletes the will.
//!
//! NOTE: a delayed will still pending when the instance shuts down is not published. Without
//! a message store it ends with the instance; with one, the restarted instance restores it and
//! publishes it when it falls due.

use std::time::Instant;

use bytes::Bytes;
use switchyard_codec::{ByteStr, Properties, ProtocolVersion, Publish, QoS, Will};

use crate::ids::ClientId;
use crate::message::Message;

/// A will message kept by a session until it is published or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WillMessage {
    pub(crate) topic: ByteStr,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// Seconds between the end of the connection and the publication; 0 in MQTT 3.x.
    pub(crate) delay: u32,
    /// The will properties that are forwarded with the message (5.0): Payload Format
    /// Indicator, Message Expiry Interval, Content Type, Response Topic, Correlation Data and
    /// User Properties. The Will Delay Interval is not among them, because it is for the server.
    pub(crate) properties: Properties,
}

impl WillMessage {
    /// Takes the will of a CONNECT. 3.x wills have no properties, so their delay is 0.
    pub(crate) fn from_connect(will: &Will, version: ProtocolVersion) -> WillMessage {
        let mut properties = if version.is_v5() {
            will.properties.clone()
        } else {
            Properties::default()
        };
        let delay = properties.will_delay_interval.take().unwrap_or(0);
        WillMessage {
            // Copy the topic and payload out of the CONNECT's receive buffer, which they would
            // otherwise keep alive for as long as the session keeps the will.
            topic: ByteStr::from(will.topic.as_str()),
            payload: Bytes::copy_from_slice(&will.payload),
            qos: will.qos,
            retain: will.retain,
            delay,
            properties,
        }
    }

    /// Builds the message to publish for `client_id` at `now`. The Message Expiry Interval, if
    /// any, counts from `now`, the moment of publication.
    pub(crate) fn to_message(&self, client_id: &ClientId, now: Instant) -> Message {
        let publish = Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id: None,
            properties: self.properties.clone(),
            payload: self.payload.clone(),
        };
        Message::from_publish(publish, client_id.clone(), now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn will_with_properties(properties: Properties) -> Will {
        Will {
            topic: ByteStr::from("status/device-1"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
        }
    }

    #[test]
    fn v5_will_keeps_forwarded_properties() {
        let properties = Properties {
            will_delay_interval: Some(30),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some(ByteStr::from("text/plain")),
            response_topic: Some(ByteStr::from("replies/device-1")),
            correlation_data: Some(Bytes::from_static(b"42")),
            user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
            ..Properties::default()
        };
        let will =
            WillMessage::from_connect(&will_with_properties(properties), ProtocolVersion::V5);
        assert_eq!(will.delay, 30);
        assert_eq!(will.properties.will_delay_interval, None);
        assert_eq!(will.properties.payload_format_indicator, Some(1));
        assert_eq!(will.properties.message_expiry_interval, Some(60));
        assert_eq!(will.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            will.properties.response_topic.as_deref(),
            Some("replies/device-1")
        );
        assert_eq!(
            will.properties.correlation_data.as_deref(),
            Some(&b"42"[..])
        );
        assert_eq!(will.properties.user_properties.len(), 1);
    }

    #[test]
    fn v3_will_has_no_delay_or_properties() {
        let properties = Properties {
            will_delay_interval: Some(30),
            ..Properties::default()
        };
        let will =
            WillMessage::from_connect(&will_with_properties(properties), ProtocolVersion::V3_1_1);
        assert_eq!(will.delay, 0);
        assert_eq!(will.properties, Properties::default());
    }

    #[test]
    fn message_expiry_counts_from_publication() {
        let properties = Properties {
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        let will =
            WillMessage::from_connect(&will_with_properties(properties), ProtocolVersion::V5);
        let published_at = Instant::now() + Duration::from_secs(100);
        let message = will.to_message(&ClientId::new("device-1"), published_at);
        assert_eq!(message.topic.as_str(), "status/device-1");
        assert_eq!(&message.payload[..], b"offline");
        assert_eq!(message.qos, QoS::AtLeastOnce);
        assert!(message.retain);
        assert_eq!(message.publisher.as_str(), "device-1");
        assert_eq!(message.remaining_expiry(published_at), Some(60));
    }
}
