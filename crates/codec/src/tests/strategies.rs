//! Proptest strategies that generate only packets valid for a given protocol version.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};

use crate::decode::connect::CONNACK_REASONS;
use crate::decode::publish::{PUBACK_REASONS, PUBREL_REASONS};
use crate::decode::subscribe::{SUBACK_REASONS, SUBACK_RETURN_CODES, UNSUBACK_REASONS};
use crate::decode::{AUTH_REASONS, DISCONNECT_REASONS};
use crate::packet::*;
use crate::properties::{self as table, PropertyContext, is_allowed};
use crate::varint::MAX_VALUE;

/// 5.0 reason codes that have a 3.1.1 CONNACK return code, so they survive a 3.x round trip.
const CONNACK_V3_REASONS: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];

pub(crate) const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fn text() -> impl Strategy<Value = ByteStr> {
    // \PC excludes control characters (so U+0000) and surrogates cannot occur in a Rust string.
    "\\PC{0,8}".prop_map(ByteStr::from)
}

fn topic_name() -> impl Strategy<Value = ByteStr> {
    "[a-zA-Z0-9 _$/é中]{1,12}".prop_map(ByteStr::from)
}

fn topic_filter() -> impl Strategy<Value = ByteStr> {
    // The decoder does not validate filters, so invalid ones like `a#` must round-trip too.
    "[a-z/+#]{0,10}".prop_map(ByteStr::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(ReasonCode)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

/// Any combination of valid property values, before [`restrict`] removes what a packet forbids.
fn any_properties() -> impl Strategy<Value = Properties> {
    let first = (
        flag(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(binary()),
        vec(1..=MAX_VALUE, 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
        option::of(binary()),
        flag(),
    );
    let second = (
        option::of(any::<u32>()),
        flag(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1..=u16::MAX),
        option::of(any::<u16>()),
        option::of(1..=u16::MAX),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        option::of(1..=u32::MAX),
    );
    let third = (flag(), flag(), flag());
    (first, second, third).prop_map(|(first, second, third)| Properties {
        payload_format_indicator: first.0,
        message_expiry_interval: first.1,
        content_type: first.2,
        response_topic: first.3,
        correlation_data: first.4,
        subscription_identifiers: first.5,
        session_expiry_interval: first.6,
        assigned_client_identifier: first.7,
        server_keep_alive: first.8,
        authentication_method: first.9,
        authentication_data: first.10,
        request_problem_information: first.11,
        will_delay_interval: second.0,
        request_response_information: second.1,
        response_information: second.2,
        server_reference: second.3,
        reason_string: second.4,
        receive_maximum: second.5,
        topic_alias_maximum: second.6,
        topic_alias: second.7,
        maximum_qos: second.8,
        retain_available: second.9,
        user_properties: second.10,
        maximum_packet_size: second.11,
        wildcard_subscription_available: third.0,
        subscription_identifier_available: third.1,
        shared_subscription_available: third.2,
    })
}

/// Clears every property that `context` does not allow, so the result decodes unchanged.
fn restrict(mut p: Properties, context: PropertyContext) -> Properties {
    let allowed = |id| is_allowed(id, context);
    if !allowed(table::PAYLOAD_FORMAT_INDICATOR) {
        p.payload_format_indicator = None;
    }
    if !allowed(table::MESSAGE_EXPIRY_INTERVAL) {
        p.message_expiry_interval = None;
    }
    if !allowed(table::CONTENT_TYPE) {
        p.content_type = None;
    }
    if !allowed(table::RESPONSE_TOPIC) {
        p.response_topic = None;
    }
    if !allowed(table::CORRELATION_DATA) {
        p.correlation_data = None;
    }
    if !allowed(table::SUBSCRIPTION_IDENTIFIER) {
        p.subscription_identifiers.clear();
    }
    if context != PropertyContext::Publish {
        p.subscription_identifiers.truncate(1);
    }
    if !allowed(table::SESSION_EXPIRY_INTERVAL) {
        p.session_expiry_interval = None;
    }
    if !allowed(table::ASSIGNED_CLIENT_IDENTIFIER) {
        p.assigned_client_identifier = None;
    }
    if !allowed(table::SERVER_KEEP_ALIVE) {
        p.server_keep_alive = None;
    }
    if !allowed(table::AUTHENTICATION_METHOD) {
        p.authentication_method = None;
    }
    if !allowed(table::AUTHENTICATION_DATA) || p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    if !allowed(table::REQUEST_PROBLEM_INFORMATION) {
        p.request_problem_information = None;
    }
    if !allowed(table::WILL_DELAY_INTERVAL) {
        p.will_delay_interval = None;
    }
    if !allowed(table::REQUEST_RESPONSE_INFORMATION) {
        p.request_response_information = None;
    }
    if !allowed(table::RESPONSE_INFORMATION) {
        p.response_information = None;
    }
    if !allowed(table::SERVER_REFERENCE) {
        p.server_reference = None;
    }
    if !allowed(table::REASON_STRING) {
        p.reason_string = None;
    }
    if !allowed(table::RECEIVE_MAXIMUM) {
        p.receive_maximum = None;
    }
    if !allowed(table::TOPIC_ALIAS_MAXIMUM) {
        p.topic_alias_maximum = None;
    }
    if !allowed(table::TOPIC_ALIAS) {
        p.topic_alias = None;
    }
    if !allowed(table::MAXIMUM_QOS) {
        p.maximum_qos = None;
    }
    if !allowed(table::RETAIN_AVAILABLE) {
        p.retain_available = None;
    }
    if !allowed(table::MAXIMUM_PACKET_SIZE) {
        p.maximum_packet_size = None;
    }
    if !allowed(table::WILDCARD_SUBSCRIPTION_AVAILABLE) {
        p.wildcard_subscription_available = None;
    }
    if !allowed(table::SUBSCRIPTION_IDENTIFIER_AVAILABLE) {
        p.subscription_identifier_available = None;
    }
    if !allowed(table::SHARED_SUBSCRIPTION_AVAILABLE) {
        p.shared_subscription_available = None;
    }
    p
}

/// Properties valid in `context`; always empty for 3.x, which has none.
fn properties(context: PropertyContext, version: ProtocolVersion) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        any_properties()
            .prop_map(move |p| restrict(p, context))
            .boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties(PropertyContext::Will, version),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will(version)),
        option::of(text()),
        option::of(binary()),
        properties(PropertyContext::Connect, version),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x forbids a password without a user name.
                let password = if version.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        CONNACK_REASONS
    } else {
        CONNACK_V3_REASONS
    };
    (
        any::<bool>(),
        reason(codes),
        properties(PropertyContext::ConnAck, version),
    )
        .prop_map(|(session_present, reason, properties)| {
            // Session Present must be 0 with a failure code.
            let session_present = session_present && !reason.is_error();
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if version.is_v5() {
        prop_oneof![3 => topic_name(), 1 => Just(ByteStr::default())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        1..=u16::MAX,
        properties(PropertyContext::Publish, version),
        binary(),
    )
        .prop_map(
            |(dup, qos, retain, topic, packet_id, mut properties, payload)| {
                if topic.is_empty() && properties.topic_alias.is_none() {
                    properties.topic_alias = Some(1);
                }
                let at_most_once = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { None } else { Some(packet_id) },
                    properties,
                    payload,
                })
            },
        )
}

fn ack(context: PropertyContext, version: ProtocolVersion) -> impl Strategy<Value = Ack> {
    let codes = match (version.is_v5(), context) {
        (false, _) => &[0x00][..],
        (true, PropertyContext::PubAck | PropertyContext::PubRec) => PUBACK_REASONS,
        (true, _) => PUBREL_REASONS,
    };
    (1..=u16::MAX, reason(codes), properties(context, version)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

fn subscription(version: ProtocolVersion) -> impl Strategy<Value = Subscription> {
    (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
        move |(filter, qos, no_local, retain_as_published, retain_handling)| {
            let options = if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::with_qos(qos)
            };
            Subscription { filter, options }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        1..=u16::MAX,
        vec(subscription(version), 1..4),
        properties(PropertyContext::Subscribe, version),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        SUBACK_REASONS
    } else {
        SUBACK_RETURN_CODES
    };
    (
        1..=u16::MAX,
        vec(reason(codes), 1..4),
        properties(PropertyContext::SubAck, version),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        1..=u16::MAX,
        vec(topic_filter(), 1..4),
        properties(PropertyContext::Unsubscribe, version),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.x UNSUBACK has no reason codes.
    let reasons = if version.is_v5() {
        vec(reason(UNSUBACK_REASONS), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        1..=u16::MAX,
        reasons,
        properties(PropertyContext::UnsubAck, version),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        DISCONNECT_REASONS
    } else {
        &[0x00][..]
    };
    (
        reason(codes),
        properties(PropertyContext::Disconnect, version),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(AUTH_REASONS),
        properties(PropertyContext::Auth, ProtocolVersion::V5),
    )
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any packet valid for `version`, AUTH only for 5.0.
pub(crate) fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut choices = vec![
        connect(version).boxed(),
        connack(version).boxed(),
        publish(version).boxed(),
        ack(PropertyContext::PubAck, version)
            .prop_map(Packet::PubAck)
            .boxed(),
        ack(PropertyContext::PubRec, version)
            .prop_map(Packet::PubRec)
            .boxed(),
        ack(PropertyContext::PubRel, version)
            .prop_map(Packet::PubRel)
            .boxed(),
        ack(PropertyContext::PubComp, version)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).boxed(),
    ];
    if version.is_v5() {
        choices.push(auth().boxed());
    }
    Union::new(choices).boxed()
}

/// A protocol version together with a packet valid for it.
pub(crate) fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    select(&VERSIONS[..]).prop_flat_map(|version| (Just(version), packet(version)))
}
