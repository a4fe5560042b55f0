//! PUBLISH and its acknowledgements PUBACK, PUBREC, PUBREL and PUBCOMP.

use crate::error::DecodeError;
use crate::packet::{Ack, ProtocolVersion, Publish, QoS, ReasonCode};
use crate::properties::{self, PropertyContext};
use crate::reader::Reader;
use crate::topic::{self, TopicError};

/// Reason codes a 5.0 PUBACK or PUBREC may carry (5.0 sections 3.4.2.1 and 3.5.2.1).
pub(crate) const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

/// Reason codes a 5.0 PUBREL or PUBCOMP may carry (5.0 sections 3.6.2.1 and 3.7.2.1).
pub(crate) const PUBREL_REASONS: &[u8] = &[0x00, 0x92];

/// Decodes a PUBLISH body; `flags` are the fixed header flags, already checked.
pub(super) fn decode_publish(
    reader: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11)
        .ok_or_else(|| DecodeError::malformed("PUBLISH has QoS 3"))?;
    let topic = reader.read_string("PUBLISH topic name")?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(super::read_packet_id(reader, "PUBLISH")?),
    };
    let properties = if version.is_v5() {
        properties::decode(reader, PropertyContext::Publish)?
    } else {
        Default::default()
    };
    match topic::validate_topic_name(&topic) {
        Ok(()) => {}
        // A 5.0 PUBLISH may leave the topic empty when a Topic Alias names it.
        Err(TopicError::Empty) if properties.topic_alias.is_some() => {}
        Err(TopicError::Empty) => {
            return Err(DecodeError::protocol_error(
                "PUBLISH has an empty topic name and no Topic Alias",
            ));
        }
        Err(error) => {
            // [MQTT-3.3.2-2]: wildcards are not allowed in a topic name.
            return Err(DecodeError::new(
                ReasonCode::TOPIC_NAME_INVALID,
                format!(
                    "PUBLISH topic name {:?} is invalid: {error}",
                    topic.as_str()
                ),
            ));
        }
    }
    let payload = reader.read_rest();
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload,
    })
}

/// Decodes a PUBACK, PUBREC, PUBREL or PUBCOMP body.
///
/// In 5.0 the reason code may be left out when it is 0x00 Success and there are no properties,
/// and the property length may be left out when there are no properties (5.0 section 3.4.2.1).
pub(super) fn decode_ack(
    reader: &mut Reader,
    context: PropertyContext,
    version: ProtocolVersion,
) -> Result<Ack, DecodeError> {
    let packet = match context {
        PropertyContext::PubAck => "PUBACK",
        PropertyContext::PubRec => "PUBREC",
        PropertyContext::PubRel => "PUBREL",
        _ => "PUBCOMP",
    };
    let packet_id = super::read_packet_id(reader, packet)?;
    if !version.is_v5() || reader.is_empty() {
        return Ok(Ack::new(packet_id));
    }
    let allowed = match context {
        PropertyContext::PubAck | PropertyContext::PubRec => PUBACK_REASONS,
        _ => PUBREL_REASONS,
    };
    let reason = super::read_reason(reader, packet, allowed)?;
    let properties = if reader.is_empty() {
        Default::default()
    } else {
        properties::decode(reader, context)?
    };
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}
