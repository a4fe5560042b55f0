//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK bodies.
//!
//! Topic filters are checked to be valid UTF-8 strings only; see [`super::decode_packet`] for
//! why the broker validates them instead.

use crate::error::DecodeError;
use crate::packet::{
    ProtocolVersion, QoS, ReasonCode, SubAck, Subscribe, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};
use crate::properties::{self, PropertyContext};
use crate::reader::Reader;
use crate::topic;

/// Return codes a 3.1.1 SUBACK may carry (3.1.1 section 3.9.3).
pub(crate) const SUBACK_RETURN_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];

/// Reason codes a 5.0 SUBACK may carry (5.0 section 3.9.3).
pub(crate) const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];

/// Reason codes a 5.0 UNSUBACK may carry (5.0 section 3.11.3).
pub(crate) const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

fn decode_v5_properties(
    reader: &mut Reader,
    context: PropertyContext,
    version: ProtocolVersion,
) -> Result<crate::packet::Properties, DecodeError> {
    if version.is_v5() {
        properties::decode(reader, context)
    } else {
        Ok(Default::default())
    }
}

pub(super) fn decode_subscribe(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let packet_id = super::read_packet_id(reader, "SUBSCRIBE")?;
    let properties = decode_v5_properties(reader, PropertyContext::Subscribe, version)?;
    let mut subscriptions = Vec::new();
    while !reader.is_empty() {
        let filter = reader.read_string("SUBSCRIBE topic filter")?;
        let options_byte = reader.read_u8("SUBSCRIBE subscription options")?;
        let options = decode_subscription_options(options_byte, version)?;
        if options.no_local && matches!(topic::parse_shared_subscription(&filter), Ok(Some(_))) {
            // [MQTT-3.8.3-4] in 5.0.
            return Err(DecodeError::protocol_error(format!(
                "SUBSCRIBE sets No Local on shared subscription {:?}",
                filter.as_str()
            )));
        }
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        // [MQTT-3.8.3-3] in 3.1.1, [MQTT-3.8.3-2] in 5.0.
        return Err(DecodeError::protocol_error(
            "SUBSCRIBE has no topic filters",
        ));
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

/// Decodes the subscription options byte (3.1.1 section 3.8.3.1, 5.0 section 3.8.3.1).
///
/// 3.1.1 uses only the two QoS bits, and other bits or QoS 3 are malformed [MQTT-3.8.3-4]. 5.0
/// reserves bits 6 and 7, which are malformed when set [MQTT-3.8.3-5], and treats QoS 3 and
/// Retain Handling 3 as a Protocol Error.
fn decode_subscription_options(
    byte: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    let reserved_mask = if version.is_v5() {
        0b1100_0000
    } else {
        0b1111_1100
    };
    if byte & reserved_mask != 0 {
        return Err(DecodeError::malformed(format!(
            "SUBSCRIBE subscription options 0x{byte:02X} set reserved bits"
        )));
    }
    let Some(qos) = QoS::from_u8(byte & 0b11) else {
        let detail = "SUBSCRIBE requests QoS 3";
        return Err(if version.is_v5() {
            DecodeError::protocol_error(detail)
        } else {
            DecodeError::malformed(detail)
        });
    };
    let retain_handling = (byte >> 4) & 0b11;
    if retain_handling == 3 {
        return Err(DecodeError::protocol_error(
            "SUBSCRIBE has Retain Handling 3",
        ));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

pub(super) fn decode_suback(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<SubAck, DecodeError> {
    let packet_id = super::read_packet_id(reader, "SUBACK")?;
    let properties = decode_v5_properties(reader, PropertyContext::SubAck, version)?;
    let allowed = if version.is_v5() {
        SUBACK_REASONS
    } else {
        SUBACK_RETURN_CODES
    };
    let reasons = read_reason_list(reader, "SUBACK", allowed)?;
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

pub(super) fn decode_unsubscribe(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = super::read_packet_id(reader, "UNSUBSCRIBE")?;
    let properties = decode_v5_properties(reader, PropertyContext::Unsubscribe, version)?;
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.read_string("UNSUBSCRIBE topic filter")?);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2].
        return Err(DecodeError::protocol_error(
            "UNSUBSCRIBE has no topic filters",
        ));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// Decodes UNSUBACK. In 3.x it carries only the packet identifier.
pub(super) fn decode_unsuback(
    reader: &mut Reader,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let packet_id = super::read_packet_id(reader, "UNSUBACK")?;
    if !version.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Default::default(),
        });
    }
    let properties = properties::decode(reader, PropertyContext::UnsubAck)?;
    let reasons = read_reason_list(reader, "UNSUBACK", UNSUBACK_REASONS)?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

/// Reads the rest of the packet as one reason code per topic filter, at least one.
fn read_reason_list(
    reader: &mut Reader,
    packet: &str,
    allowed: &[u8],
) -> Result<Vec<ReasonCode>, DecodeError> {
    let mut reasons = Vec::with_capacity(reader.remaining());
    while !reader.is_empty() {
        reasons.push(super::read_reason(reader, packet, allowed)?);
    }
    if reasons.is_empty() {
        return Err(DecodeError::protocol_error(format!(
            "{packet} has no reason codes"
        )));
    }
    Ok(reasons)
}
