//! MQTT 5.0 properties (section 2.2.2): the table of which property may appear in which packet,
//! and their decoding, validation and encoding.
//!
//! Decoding rejects, per the 5.0 specification:
//! - an unknown property identifier, a property not allowed in the packet type (section
//!   2.2.2.2) and a property list that runs past the end of the packet as 0x81 Malformed Packet;
//! - a repeated property (other than User Property, and Subscription Identifier in PUBLISH) and
//!   an out-of-range value as 0x82 Protocol Error, as the section of each property states.
//!
//! NOTE: 5.0 names no error for a Payload Format Indicator other than 0 or 1; the decoder treats
//! it like the other 0-or-1 bytes, as a Protocol Error.

use crate::error::DecodeError;
use crate::packet::{ByteStr, Properties, ReasonCode};
use crate::reader::Reader;
use crate::topic;
use crate::writer::{Sink, count};

/// Packet (or will message) a property list belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyContext {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::Will => "will properties",
            PropertyContext::ConnAck => "CONNACK",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::PubAck => "PUBACK",
            PropertyContext::PubRec => "PUBREC",
            PropertyContext::PubRel => "PUBREL",
            PropertyContext::PubComp => "PUBCOMP",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::SubAck => "SUBACK",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::UnsubAck => "UNSUBACK",
            PropertyContext::Disconnect => "DISCONNECT",
            PropertyContext::Auth => "AUTH",
        }
    }
}

const CONNECT: u16 = 1 << PropertyContext::Connect as u16;
const WILL: u16 = 1 << PropertyContext::Will as u16;
const CONNACK: u16 = 1 << PropertyContext::ConnAck as u16;
const PUBLISH: u16 = 1 << PropertyContext::Publish as u16;
const PUBLISH_ACKS: u16 = (1 << PropertyContext::PubAck as u16)
    | (1 << PropertyContext::PubRec as u16)
    | (1 << PropertyContext::PubRel as u16)
    | (1 << PropertyContext::PubComp as u16);
const SUBSCRIBE: u16 = 1 << PropertyContext::Subscribe as u16;
const SUBACK: u16 = 1 << PropertyContext::SubAck as u16;
const UNSUBACK: u16 = 1 << PropertyContext::UnsubAck as u16;
const DISCONNECT: u16 = 1 << PropertyContext::Disconnect as u16;
const AUTH: u16 = 1 << PropertyContext::Auth as u16;
const ALL: u16 = u16::MAX;

pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Name of a property identifier and the packets it may appear in (5.0 table 2-4).
struct PropertyDefinition {
    id: u8,
    name: &'static str,
    allowed_in: u16,
}

const fn definition(id: u8, name: &'static str, allowed_in: u16) -> PropertyDefinition {
    PropertyDefinition {
        id,
        name,
        allowed_in,
    }
}

const DEFINITIONS: [PropertyDefinition; 27] = [
    definition(
        PAYLOAD_FORMAT_INDICATOR,
        "Payload Format Indicator",
        PUBLISH | WILL,
    ),
    definition(
        MESSAGE_EXPIRY_INTERVAL,
        "Message Expiry Interval",
        PUBLISH | WILL,
    ),
    definition(CONTENT_TYPE, "Content Type", PUBLISH | WILL),
    definition(RESPONSE_TOPIC, "Response Topic", PUBLISH | WILL),
    definition(CORRELATION_DATA, "Correlation Data", PUBLISH | WILL),
    definition(
        SUBSCRIPTION_IDENTIFIER,
        "Subscription Identifier",
        PUBLISH | SUBSCRIBE,
    ),
    definition(
        SESSION_EXPIRY_INTERVAL,
        "Session Expiry Interval",
        CONNECT | CONNACK | DISCONNECT,
    ),
    definition(
        ASSIGNED_CLIENT_IDENTIFIER,
        "Assigned Client Identifier",
        CONNACK,
    ),
    definition(SERVER_KEEP_ALIVE, "Server Keep Alive", CONNACK),
    definition(
        AUTHENTICATION_METHOD,
        "Authentication Method",
        CONNECT | CONNACK | AUTH,
    ),
    definition(
        AUTHENTICATION_DATA,
        "Authentication Data",
        CONNECT | CONNACK | AUTH,
    ),
    definition(
        REQUEST_PROBLEM_INFORMATION,
        "Request Problem Information",
        CONNECT,
    ),
    definition(WILL_DELAY_INTERVAL, "Will Delay Interval", WILL),
    definition(
        REQUEST_RESPONSE_INFORMATION,
        "Request Response Information",
        CONNECT,
    ),
    definition(RESPONSE_INFORMATION, "Response Information", CONNACK),
    definition(SERVER_REFERENCE, "Server Reference", CONNACK | DISCONNECT),
    definition(
        REASON_STRING,
        "Reason String",
        CONNACK | PUBLISH_ACKS | SUBACK | UNSUBACK | DISCONNECT | AUTH,
    ),
    definition(RECEIVE_MAXIMUM, "Receive Maximum", CONNECT | CONNACK),
    definition(
        TOPIC_ALIAS_MAXIMUM,
        "Topic Alias Maximum",
        CONNECT | CONNACK,
    ),
    definition(TOPIC_ALIAS, "Topic Alias", PUBLISH),
    definition(MAXIMUM_QOS, "Maximum QoS", CONNACK),
    definition(RETAIN_AVAILABLE, "Retain Available", CONNACK),
    definition(USER_PROPERTY, "User Property", ALL),
    definition(
        MAXIMUM_PACKET_SIZE,
        "Maximum Packet Size",
        CONNECT | CONNACK,
    ),
    definition(
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        "Wildcard Subscription Available",
        CONNACK,
    ),
    definition(
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        "Subscription Identifier Available",
        CONNACK,
    ),
    definition(
        SHARED_SUBSCRIPTION_AVAILABLE,
        "Shared Subscription Available",
        CONNACK,
    ),
];

fn lookup(id: u8) -> Option<&'static PropertyDefinition> {
    DEFINITIONS.iter().find(|definition| definition.id == id)
}

/// Reports whether property `id` may appear in `context`.
pub(crate) fn is_allowed(id: u8, context: PropertyContext) -> bool {
    lookup(id).is_some_and(|definition| definition.allowed_in & context.bit() != 0)
}

/// Reports whether `id` may appear more than once in `context`.
fn may_repeat(id: u8, context: PropertyContext) -> bool {
    id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && context == PropertyContext::Publish)
}

/// Reads a property length and the property list that follows it.
pub(crate) fn decode(
    reader: &mut Reader,
    context: PropertyContext,
) -> Result<Properties, DecodeError> {
    let where_ = context.name();
    let len = reader
        .read_varint("property length")
        .map_err(|error| error.within(where_))?;
    // The property length must fit in the rest of the packet; it never waits for more bytes.
    let mut list = reader
        .split(len as usize, "property list")
        .map_err(|error| error.within(where_))?;
    let mut properties = Properties::default();
    // Identifiers are below 64, so one bit per identifier records which ones were seen.
    let mut seen: u64 = 0;
    while !list.is_empty() {
        let id = list.read_u8("property identifier")?;
        let Some(definition) = lookup(id) else {
            return Err(DecodeError::malformed(format!(
                "unknown property identifier 0x{id:02X} in {where_}"
            )));
        };
        let name = definition.name;
        if definition.allowed_in & context.bit() == 0 {
            return Err(DecodeError::malformed(format!(
                "property {name} (0x{id:02X}) is not allowed in {where_}"
            )));
        }
        if !may_repeat(id, context) {
            let bit = 1u64 << id;
            if seen & bit != 0 {
                return Err(DecodeError::protocol_error(format!(
                    "property {name} appears more than once in {where_}"
                )));
            }
            seen |= bit;
        }
        decode_value(&mut list, id, name, &mut properties).map_err(|error| error.within(where_))?;
    }
    // CONNECT, CONNACK and AUTH treat Authentication Data without a method as a Protocol Error.
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::protocol_error(format!(
            "{where_} has Authentication Data without Authentication Method"
        )));
    }
    Ok(properties)
}

/// Reads the value of property `id` into `properties` and checks its range.
fn decode_value(
    list: &mut Reader,
    id: u8,
    name: &str,
    properties: &mut Properties,
) -> Result<(), DecodeError> {
    match id {
        PAYLOAD_FORMAT_INDICATOR => {
            properties.payload_format_indicator = Some(read_flag(list, name)?);
        }
        MESSAGE_EXPIRY_INTERVAL => properties.message_expiry_interval = Some(list.read_u32(name)?),
        CONTENT_TYPE => properties.content_type = Some(list.read_string(name)?),
        RESPONSE_TOPIC => {
            let value = list.read_string(name)?;
            // The Response Topic is a topic name, so wildcards are not allowed [MQTT-3.3.2-14].
            if let Err(error) = topic::validate_topic_name(&value) {
                return Err(DecodeError::protocol_error(format!(
                    "{name} is invalid: {error}"
                )));
            }
            properties.response_topic = Some(value);
        }
        CORRELATION_DATA => properties.correlation_data = Some(list.read_binary(name)?),
        SUBSCRIPTION_IDENTIFIER => {
            let value = list.read_varint(name)?;
            if value == 0 {
                return Err(DecodeError::protocol_error("Subscription Identifier is 0"));
            }
            properties.subscription_identifiers.push(value);
        }
        SESSION_EXPIRY_INTERVAL => properties.session_expiry_interval = Some(list.read_u32(name)?),
        ASSIGNED_CLIENT_IDENTIFIER => {
            properties.assigned_client_identifier = Some(list.read_string(name)?);
        }
        SERVER_KEEP_ALIVE => properties.server_keep_alive = Some(list.read_u16(name)?),
        AUTHENTICATION_METHOD => properties.authentication_method = Some(list.read_string(name)?),
        AUTHENTICATION_DATA => properties.authentication_data = Some(list.read_binary(name)?),
        REQUEST_PROBLEM_INFORMATION => {
            properties.request_problem_information = Some(read_flag(list, name)?);
        }
        WILL_DELAY_INTERVAL => properties.will_delay_interval = Some(list.read_u32(name)?),
        REQUEST_RESPONSE_INFORMATION => {
            properties.request_response_information = Some(read_flag(list, name)?);
        }
        RESPONSE_INFORMATION => properties.response_information = Some(list.read_string(name)?),
        SERVER_REFERENCE => properties.server_reference = Some(list.read_string(name)?),
        REASON_STRING => properties.reason_string = Some(list.read_string(name)?),
        RECEIVE_MAXIMUM => properties.receive_maximum = Some(read_nonzero_u16(list, name)?),
        TOPIC_ALIAS_MAXIMUM => properties.topic_alias_maximum = Some(list.read_u16(name)?),
        TOPIC_ALIAS => properties.topic_alias = Some(read_topic_alias(list, name)?),
        MAXIMUM_QOS => properties.maximum_qos = Some(read_flag(list, name)?),
        RETAIN_AVAILABLE => properties.retain_available = Some(read_flag(list, name)?),
        USER_PROPERTY => {
            let key = list.read_string("User Property name")?;
            let value = list.read_string("User Property value")?;
            properties.user_properties.push((key, value));
        }
        MAXIMUM_PACKET_SIZE => {
            let value = list.read_u32(name)?;
            if value == 0 {
                return Err(DecodeError::protocol_error("Maximum Packet Size is 0"));
            }
            properties.maximum_packet_size = Some(value);
        }
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            properties.wildcard_subscription_available = Some(read_flag(list, name)?);
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            properties.subscription_identifier_available = Some(read_flag(list, name)?);
        }
        SHARED_SUBSCRIPTION_AVAILABLE => {
            properties.shared_subscription_available = Some(read_flag(list, name)?);
        }
        // `lookup` succeeded, so every identifier of the table is handled above.
        _ => {
            return Err(DecodeError::malformed(format!(
                "unknown property identifier 0x{id:02X}"
            )));
        }
    }
    Ok(())
}

/// Reads a byte property whose only valid values are 0 and 1 (Maximum QoS included).
fn read_flag(list: &mut Reader, name: &str) -> Result<u8, DecodeError> {
    let value = list.read_u8(name)?;
    if value > 1 {
        return Err(DecodeError::protocol_error(format!(
            "{name} is {value}, expected 0 or 1"
        )));
    }
    Ok(value)
}

fn read_nonzero_u16(list: &mut Reader, name: &str) -> Result<u16, DecodeError> {
    let value = list.read_u16(name)?;
    if value == 0 {
        return Err(DecodeError::protocol_error(format!("{name} is 0")));
    }
    Ok(value)
}

/// Reads a Topic Alias. Alias 0 is not permitted [MQTT-3.3.2-8 in 5.0], and 0x94 (Topic Alias
/// invalid) is the reason code that names the problem.
fn read_topic_alias(list: &mut Reader, name: &str) -> Result<u16, DecodeError> {
    let value = list.read_u16(name)?;
    if value == 0 {
        return Err(DecodeError::new(
            ReasonCode::TOPIC_ALIAS_INVALID,
            format!("{name} is 0"),
        ));
    }
    Ok(value)
}

/// Writes the property length and the properties of `properties` allowed in `context`.
///
/// Properties not allowed in `context` are skipped, so the output is always a valid list. Only
/// PUBLISH carries more than one Subscription Identifier, other packets get the first.
pub(crate) fn encode(properties: &Properties, context: PropertyContext, out: &mut impl Sink) {
    let len = count(|counter| encode_list(properties, context, counter));
    out.put_varint(u32::try_from(len).unwrap_or(u32::MAX));
    encode_list(properties, context, out);
}

/// Reports whether [`encode`] would write an empty list, so short packet forms can be used.
pub(crate) fn is_empty(properties: &Properties, context: PropertyContext) -> bool {
    count(|counter| encode_list(properties, context, counter)) == 0
}

/// Writes the identifier of `id` when it is allowed in `context` and reports whether it did.
fn start(out: &mut impl Sink, context: PropertyContext, id: u8) -> bool {
    if !is_allowed(id, context) {
        return false;
    }
    out.put_u8(id);
    true
}

fn encode_list(properties: &Properties, context: PropertyContext, out: &mut impl Sink) {
    let p = properties;
    encode_byte(
        out,
        context,
        PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator,
    );
    encode_u32(
        out,
        context,
        MESSAGE_EXPIRY_INTERVAL,
        p.message_expiry_interval,
    );
    encode_string(out, context, CONTENT_TYPE, p.content_type.as_ref());
    encode_string(out, context, RESPONSE_TOPIC, p.response_topic.as_ref());
    encode_binary(
        out,
        context,
        CORRELATION_DATA,
        p.correlation_data.as_deref(),
    );

    let identifier_limit = if context == PropertyContext::Publish {
        usize::MAX
    } else {
        1
    };
    for &value in p.subscription_identifiers.iter().take(identifier_limit) {
        if start(out, context, SUBSCRIPTION_IDENTIFIER) {
            out.put_varint(value);
        }
    }

    encode_u32(
        out,
        context,
        SESSION_EXPIRY_INTERVAL,
        p.session_expiry_interval,
    );
    encode_string(
        out,
        context,
        ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier.as_ref(),
    );
    encode_u16(out, context, SERVER_KEEP_ALIVE, p.server_keep_alive);
    encode_string(
        out,
        context,
        AUTHENTICATION_METHOD,
        p.authentication_method.as_ref(),
    );
    encode_binary(
        out,
        context,
        AUTHENTICATION_DATA,
        p.authentication_data.as_deref(),
    );
    encode_byte(
        out,
        context,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    encode_u32(out, context, WILL_DELAY_INTERVAL, p.will_delay_interval);
    encode_byte(
        out,
        context,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    encode_string(
        out,
        context,
        RESPONSE_INFORMATION,
        p.response_information.as_ref(),
    );
    encode_string(out, context, SERVER_REFERENCE, p.server_reference.as_ref());
    encode_string(out, context, REASON_STRING, p.reason_string.as_ref());
    encode_u16(out, context, RECEIVE_MAXIMUM, p.receive_maximum);
    encode_u16(out, context, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    encode_u16(out, context, TOPIC_ALIAS, p.topic_alias);
    encode_byte(out, context, MAXIMUM_QOS, p.maximum_qos);
    encode_byte(out, context, RETAIN_AVAILABLE, p.retain_available);

    for (key, value) in &p.user_properties {
        if start(out, context, USER_PROPERTY) {
            out.put_string(key);
            out.put_string(value);
        }
    }

    encode_u32(out, context, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    encode_byte(
        out,
        context,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    encode_byte(
        out,
        context,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    encode_byte(
        out,
        context,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
}

fn encode_u32(out: &mut impl Sink, context: PropertyContext, id: u8, value: Option<u32>) {
    if let Some(value) = value
        && start(out, context, id)
    {
        out.put_u32(value);
    }
}

fn encode_binary(out: &mut impl Sink, context: PropertyContext, id: u8, value: Option<&[u8]>) {
    if let Some(value) = value
        && start(out, context, id)
    {
        out.put_binary(value);
    }
}

fn encode_string(out: &mut impl Sink, context: PropertyContext, id: u8, value: Option<&ByteStr>) {
    if let Some(value) = value
        && start(out, context, id)
    {
        out.put_string(value);
    }
}

fn encode_byte(out: &mut impl Sink, context: PropertyContext, id: u8, value: Option<u8>) {
    if let Some(value) = value
        && start(out, context, id)
    {
        out.put_u8(value);
    }
}

fn encode_u16(out: &mut impl Sink, context: PropertyContext, id: u8, value: Option<u16>) {
    if let Some(value) = value
        && start(out, context, id)
    {
        out.put_u16(value);
    }
}
