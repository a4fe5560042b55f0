//! The server's decisions on a CONNECT: client identifier, keep-alive, session expiry, the
//! windows of the connection and what the client accepts, and the CONNACK properties that
//! announce them to 5.0 clients.
//!
//! Pure functions, so every rule is unit tested without a socket.

use switchyard_codec::{ByteStr, Connect, Properties, ProtocolVersion, ReasonCode};

use crate::ids::ClientId;
use crate::settings::InstanceSettings;

/// The server's grant for one CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) client_id: ClientId,
    /// Whether the server chose the client identifier, which 5.0 returns in CONNACK.
    pub(crate) assigned_client_id: bool,
    /// Keep-alive interval enforced on the connection, in seconds; 0 turns it off.
    pub(crate) keep_alive: u16,
    /// Set when it differs from the client's request, for the 5.0 Server Keep Alive property.
    pub(crate) server_keep_alive: Option<u16>,
    /// Session Expiry Interval in seconds.
    pub(crate) session_expiry: u32,
    /// Whether the granted expiry differs from the 5.0 client's request and must be announced.
    pub(crate) session_expiry_changed: bool,
    /// Outbound window: QoS 1 and QoS 2 messages in flight to the client at once.
    pub(crate) outbound_window: u16,
    /// The client's Maximum Packet Size in bytes (5.0), if it announced one.
    pub(crate) client_max_packet_size: Option<u32>,
    /// Topic aliases the server may set towards the client: the client's Topic Alias Maximum
    /// (5.0) capped by the instance setting; 0 uses none.
    pub(crate) outbound_topic_alias_maximum: u16,
    /// Whether the client accepts Reason Strings and User Properties on every packet; false
    /// when a 5.0 client set Request Problem Information to 0.
    pub(crate) problem_information: bool,
    /// Response Information for CONNACK, when the client asked for it and the instance has a
    /// response topic prefix.
    pub(crate) response_information: Option<String>,
}

/// Maximum length of an MQTT 3.1 client identifier, in characters.
const MQTT31_MAX_CLIENT_ID_CHARS: usize = 23;

/// Decides how to serve `connect`, or returns the CONNACK reason code that rejects it.
///
/// `assign_client_id` is called for an empty client identifier that the server may replace.
pub(crate) fn negotiate(
    connect: &Connect,
    settings: &InstanceSettings,
    assign_client_id: impl FnOnce() -> String,
) -> Result<Negotiated, ReasonCode> {
    let v5 = connect.protocol.is_v5();
    let properties = &connect.properties;

    // Enhanced authentication (AUTH exchanges) is not supported, so a CONNECT naming a method
    // is rejected with 0x8C Bad authentication method [MQTT-4.12.0-1 in 5.0].
    if properties.authentication_method.is_some() {
        return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
    }

    // MQTT 3.1 (section 3.1, CONNECT payload) allows 1 to 23 characters and rejects any other
    // id with return code 2, which 0x85 becomes. 3.1 has no assigned ids.
    if connect.protocol == ProtocolVersion::V3_1
        && settings.strict_mqtt31_client_ids
        && !(1..=MQTT31_MAX_CLIENT_ID_CHARS).contains(&connect.client_id.chars().count())
    {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }

    // An empty client identifier with a persistent session is rejected in 3.x with return code
    // 2 [MQTT-3.1.3-8 in 3.1.1]; otherwise the server assigns one [MQTT-3.1.3-6 in 3.1.1,
    // MQTT-3.1.3-6 in 5.0].
    let assigned_client_id = connect.client_id.is_empty();
    if assigned_client_id && !v5 && !connect.clean_start {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    if connect.client_id.len() > usize::from(settings.max_client_id_length) {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let client_id = if assigned_client_id {
        ClientId::new(&assign_client_id())
    } else {
        ClientId::new(&connect.client_id)
    };

    let (keep_alive, server_keep_alive) = keep_alive(connect, settings.max_keep_alive);
    let (session_expiry, session_expiry_changed) = session_expiry(connect, settings);
    let outbound_window = match properties.receive_maximum {
        Some(announced) if v5 => announced,
        _ => settings.max_inflight,
    };

    let outbound_topic_alias_maximum = if v5 {
        let announced = properties.topic_alias_maximum.unwrap_or(0);
        announced.min(settings.max_outbound_topic_aliases)
    } else {
        0
    };
    // Response Information is sent only on request [MQTT-3.1.2-28 in 5.0].
    let response_information = match (&settings.response_topic_prefix, v5) {
        (Some(prefix), true) if properties.request_response_information == Some(1) => {
            response_topic(prefix, client_id.as_str())
        }
        _ => None,
    };

    Ok(Negotiated {
        client_id,
        assigned_client_id,
        keep_alive,
        server_keep_alive,
        session_expiry,
        session_expiry_changed,
        outbound_window: outbound_window.max(1),
        client_max_packet_size: if v5 {
            properties.maximum_packet_size
        } else {
            None
        },
        outbound_topic_alias_maximum,
        problem_information: !v5 || properties.request_problem_information != Some(0),
        response_information,
    })
}

/// Builds the response topic base `<prefix>/response/<clientId>`, or `None` when the client id
/// contains a wildcard character or the result is too long to be a topic name.
fn response_topic(prefix: &str, client_id: &str) -> Option<String> {
    let topic = format!("{prefix}/response/{client_id}");
    switchyard_codec::topic::validate_topic_name(&topic).ok()?;
    Some(topic)
}

/// Builds the properties of a successful 5.0 CONNACK.
///
/// Retained messages and shared subscriptions are announced as available. The Topic Alias
/// Maximum is left out when the setting is 0, which means 0. Wildcard subscriptions and
/// Subscription Identifiers are supported, which is what their absence from CONNACK means.
pub(crate) fn connack_properties(
    negotiated: &Negotiated,
    settings: &InstanceSettings,
) -> Properties {
    Properties {
        receive_maximum: Some(settings.receive_maximum.max(1)),
        maximum_packet_size: Some(settings.max_packet_size),
        retain_available: Some(1),
        shared_subscription_available: Some(1),
        topic_alias_maximum: (settings.topic_alias_maximum > 0)
            .then_some(settings.topic_alias_maximum),
        response_information: negotiated
            .response_information
            .as_deref()
            .map(ByteStr::from),
        assigned_client_identifier: negotiated
            .assigned_client_id
            .then(|| ByteStr::from(negotiated.client_id.as_str())),
        server_keep_alive: negotiated.server_keep_alive,
        session_expiry_interval: negotiated
            .session_expiry_changed
            .then_some(negotiated.session_expiry),
        ..Properties::default()
    }
}

/// Returns the enforced keep-alive and the Server Keep Alive to announce, if any.
///
/// A 5.0 client asking for more than `max_keep_alive` gets the maximum [MQTT-3.2.2-21 in 5.0].
/// 3.x has no such property, so a 3.x client's own value is enforced.
fn keep_alive(connect: &Connect, max_keep_alive: u16) -> (u16, Option<u16>) {
    let requested = connect.keep_alive;
    let over_limit = max_keep_alive > 0 && requested > max_keep_alive;
    if connect.protocol.is_v5() && over_limit {
        (max_keep_alive, Some(max_keep_alive))
    } else {
        (requested, None)
    }
}

/// Returns the granted Session Expiry Interval and whether it differs from the request.
///
/// 3.x has no expiry interval: clean sessions end with the connection and persistent ones
/// expire after `max_session_expiry`.
fn session_expiry(connect: &Connect, settings: &InstanceSettings) -> (u32, bool) {
    let max = settings.max_session_expiry;
    match connect.protocol {
        ProtocolVersion::V5 => {
            let requested = connect.properties.session_expiry_interval.unwrap_or(0);
            let granted = requested.min(max);
            (granted, granted != requested)
        }
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => {
            if connect.clean_start {
                (0, false)
            } else {
                (max, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
        Connect {
            protocol,
            clean_start,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    fn settings() -> InstanceSettings {
        InstanceSettings::new("mqtt-test")
    }

    fn assign() -> String {
        "assigned-1".to_owned()
    }

    #[test]
    fn empty_id_with_persistent_3x_session_is_rejected() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
            let result = negotiate(&connect(version, "", false), &settings(), assign);
            assert_eq!(
                result,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
                "{version:?}"
            );
        }
    }

    #[test]
    fn empty_id_is_assigned_otherwise() {
        let cases = [
            (ProtocolVersion::V3_1_1, true),
            (ProtocolVersion::V5, true),
            (ProtocolVersion::V5, false),
        ];
        for (version, clean_start) in cases {
            let negotiated = negotiate(&connect(version, "", clean_start), &settings(), assign)
                .expect("accepted");
            assert_eq!(negotiated.client_id.as_str(), "assigned-1");
            assert!(negotiated.assigned_client_id);
        }
    }

    #[test]
    fn client_id_over_maximum_is_rejected() {
        let mut short = settings();
        short.max_client_id_length = 8;
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let at_limit = negotiate(&connect(version, "12345678", true), &short, assign);
            assert!(at_limit.is_ok(), "{version:?}");
            let over = negotiate(&connect(version, "123456789", true), &short, assign);
            assert_eq!(
                over,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
                "{version:?}"
            );
        }
    }

    #[test]
    fn given_id_is_kept() {
        let negotiated = negotiate(
            &connect(ProtocolVersion::V5, "GID_a@@@1", true),
            &settings(),
            assign,
        )
        .expect("accepted");
        assert_eq!(negotiated.client_id.as_str(), "GID_a@@@1");
        assert!(!negotiated.assigned_client_id);
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(properties.assigned_client_identifier, None);
    }

    #[test]
    fn assigned_id_is_announced_in_connack() {
        let negotiated = negotiate(&connect(ProtocolVersion::V5, "", true), &settings(), assign)
            .expect("accepted");
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(
            properties.assigned_client_identifier.as_deref(),
            Some("assigned-1")
        );
    }

    #[test]
    fn authentication_method_is_rejected() {
        let mut request = connect(ProtocolVersion::V5, "c", true);
        request.properties.authentication_method = Some("SCRAM-SHA-1".into());
        let result = negotiate(&request, &settings(), assign);
        assert_eq!(result, Err(ReasonCode::BAD_AUTHENTICATION_METHOD));
    }

    #[test]
    fn v5_keep_alive_is_capped() {
        let mut request = connect(ProtocolVersion::V5, "c", true);
        request.keep_alive = 1000;
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.keep_alive, 480);
        assert_eq!(negotiated.server_keep_alive, Some(480));
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(properties.server_keep_alive, Some(480));
    }

    #[test]
    fn keep_alive_within_limit_or_3x_is_kept() {
        let mut request = connect(ProtocolVersion::V3_1_1, "c", true);
        request.keep_alive = 1000;
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(
            (negotiated.keep_alive, negotiated.server_keep_alive),
            (1000, None)
        );

        request.protocol = ProtocolVersion::V5;
        request.keep_alive = 0;
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(
            (negotiated.keep_alive, negotiated.server_keep_alive),
            (0, None)
        );

        let mut unlimited = settings();
        unlimited.max_keep_alive = 0;
        request.keep_alive = 1000;
        let negotiated = negotiate(&request, &unlimited, assign).expect("accepted");
        assert_eq!(
            (negotiated.keep_alive, negotiated.server_keep_alive),
            (1000, None)
        );
    }

    #[test]
    fn v5_session_expiry_is_capped_and_announced() {
        let mut request = connect(ProtocolVersion::V5, "c", false);
        request.properties.session_expiry_interval = Some(u32::MAX);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.session_expiry, 259_200);
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(properties.session_expiry_interval, Some(259_200));

        request.properties.session_expiry_interval = Some(60);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.session_expiry, 60);
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(properties.session_expiry_interval, None);
    }

    #[test]
    fn v5_session_expiry_defaults_to_zero() {
        let negotiated = negotiate(
            &connect(ProtocolVersion::V5, "c", false),
            &settings(),
            assign,
        )
        .expect("accepted");
        assert_eq!(negotiated.session_expiry, 0);
    }

    #[test]
    fn v3_session_expiry_follows_clean_session() {
        let clean = negotiate(
            &connect(ProtocolVersion::V3_1_1, "c", true),
            &settings(),
            assign,
        )
        .expect("accepted");
        assert_eq!(clean.session_expiry, 0);
        let persistent = negotiate(
            &connect(ProtocolVersion::V3_1_1, "c", false),
            &settings(),
            assign,
        )
        .expect("accepted");
        assert_eq!(persistent.session_expiry, 259_200);
        assert!(!persistent.session_expiry_changed);
    }

    #[test]
    fn outbound_window_follows_receive_maximum() {
        let mut request = connect(ProtocolVersion::V5, "c", true);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_window, 32);

        request.properties.receive_maximum = Some(5);
        request.properties.maximum_packet_size = Some(2048);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_window, 5);
        assert_eq!(negotiated.client_max_packet_size, Some(2048));

        request.protocol = ProtocolVersion::V3_1_1;
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_window, 32);
        assert_eq!(negotiated.client_max_packet_size, None);
    }

    #[test]
    fn connack_announces_limits_and_features() {
        let negotiated = negotiate(
            &connect(ProtocolVersion::V5, "c", true),
            &settings(),
            assign,
        )
        .expect("accepted");
        let properties = connack_properties(&negotiated, &settings());
        assert_eq!(properties.receive_maximum, Some(128));
        assert_eq!(properties.maximum_packet_size, Some(1_048_576));
        assert_eq!(properties.retain_available, Some(1));
        assert_eq!(properties.shared_subscription_available, Some(1));
        assert_eq!(properties.topic_alias_maximum, Some(10));
        assert_eq!(properties.response_information, None);

        let mut no_aliases = settings();
        no_aliases.topic_alias_maximum = 0;
        let properties = connack_properties(&negotiated, &no_aliases);
        assert_eq!(properties.topic_alias_maximum, None);
    }

    #[test]
    fn outbound_aliases_follow_client_maximum() {
        let mut request = connect(ProtocolVersion::V5, "c", true);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_topic_alias_maximum, 0);

        request.properties.topic_alias_maximum = Some(3);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_topic_alias_maximum, 3);

        request.properties.topic_alias_maximum = Some(500);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_topic_alias_maximum, 10);

        request.protocol = ProtocolVersion::V3_1_1;
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.outbound_topic_alias_maximum, 0);
    }

    #[test]
    fn problem_information_defaults_to_on() {
        let mut request = connect(ProtocolVersion::V5, "c", true);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert!(negotiated.problem_information);
        request.properties.request_problem_information = Some(0);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert!(!negotiated.problem_information);
    }

    #[test]
    fn response_information_needs_request_and_prefix() {
        let mut with_prefix = settings();
        with_prefix.response_topic_prefix = Some("apps".to_owned());
        let mut request = connect(ProtocolVersion::V5, "GID_a@@@1", true);

        let negotiated = negotiate(&request, &with_prefix, assign).expect("accepted");
        assert_eq!(negotiated.response_information, None);

        request.properties.request_response_information = Some(1);
        let negotiated = negotiate(&request, &settings(), assign).expect("accepted");
        assert_eq!(negotiated.response_information, None);

        let negotiated = negotiate(&request, &with_prefix, assign).expect("accepted");
        assert_eq!(
            negotiated.response_information.as_deref(),
            Some("apps/response/GID_a@@@1")
        );
        let properties = connack_properties(&negotiated, &with_prefix);
        assert_eq!(
            properties.response_information.as_deref(),
            Some("apps/response/GID_a@@@1")
        );

        request.client_id = "odd+id".into();
        let negotiated = negotiate(&request, &with_prefix, assign).expect("accepted");
        assert_eq!(negotiated.response_information, None);
    }

    #[test]
    fn mqtt31_client_ids_follow_the_31_limit() {
        let strict = InstanceSettings::new("mqtt-test");
        let assign = || "assigned".to_owned();
        let v31 = |client_id: &str| connect(ProtocolVersion::V3_1, client_id, true);
        let max = "a".repeat(23);
        assert!(negotiate(&v31(&max), &strict, assign).is_ok());
        // 23 characters of two bytes each are still 23 characters.
        assert!(negotiate(&v31(&"é".repeat(23)), &strict, assign).is_ok());
        for client_id in ["", &"a".repeat(24), "GID_demo@@@device-0000001"] {
            assert_eq!(
                negotiate(&v31(client_id), &strict, assign),
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
                "{client_id:?}"
            );
        }
        // 3.1.1 keeps its own rules.
        let v311 = connect(ProtocolVersion::V3_1_1, &"a".repeat(24), true);
        assert!(negotiate(&v311, &strict, assign).is_ok());

        let mut lenient = InstanceSettings::new("mqtt-test");
        lenient.strict_mqtt31_client_ids = false;
        let long = v31("GID_demo@@@device-0000001");
        assert!(negotiate(&long, &lenient, assign).is_ok());
        let empty = negotiate(&v31(""), &lenient, assign).expect("assigned id");
        assert_eq!(empty.client_id.as_str(), "assigned");
    }
}
