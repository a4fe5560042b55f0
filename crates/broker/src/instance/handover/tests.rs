use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use switchyard_codec::{
    ByteStr, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    SubscriptionOptions,
};

use super::*;
use crate::auth::{Access, Authenticator, Identity};
use crate::connection::ConnectionHandle;
use crate::ids::ConnectionId;
use crate::instance::{OpenedSession, SubscribeOutcome};
use crate::message::Message;
use crate::negotiate::{Negotiated, negotiate};
use crate::session::{AckOutcome, InboundQoS2, Link};
use crate::settings::InstanceSettings;
use crate::subscriptions::Subscriber;

const CLIENT: &str = "GID_t@@@moved";
const ON_A: ConnectionId = ConnectionId(1);
const ON_B: ConnectionId = ConnectionId(2);

struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _connect: &Connect, _peer: SocketAddr) -> Result<Identity, ReasonCode> {
        Ok(Identity {
            principal: "test".to_owned(),
        })
    }

    fn authorize(&self, _identity: &Identity, _access: Access, _topic: &str) -> bool {
        true
    }
}

fn global() -> Origin {
    Origin::Global {
        group: "global".to_owned(),
    }
}

fn instance(id: &str) -> Arc<Instance> {
    Instance::new(InstanceSettings::new(id), Arc::new(AllowAll))
}

fn negotiated(instance: &Instance, session_expiry: u32) -> Negotiated {
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 60,
        client_id: ByteStr::from(CLIENT),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(session_expiry),
            ..Properties::default()
        },
    };
    negotiate(&connect, instance.settings(), || {
        unreachable!("client id given")
    })
    .expect("CONNECT is valid")
}

fn link() -> Link {
    Link {
        version: ProtocolVersion::V5,
        window: 10,
        max_packet_size: None,
    }
}

fn subscriber(qos: QoS, subscription_id: Option<u32>) -> Subscriber {
    Subscriber {
        options: SubscriptionOptions::with_qos(qos),
        subscription_id,
    }
}

fn message(topic: &str, qos: QoS, payload: &'static [u8]) -> Message {
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic),
        packet_id: Some(1),
        properties: Properties::default(),
        payload: Bytes::from_static(payload),
    };
    Message::from_publish(publish, ClientId::new("publisher"), Instant::now())
}

fn expect_publish(packet: Option<Packet>) -> Publish {
    match packet {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Opens the session of `CLIENT` on `instance` for connection `id` through `origin`.
fn open(
    instance: &Instance,
    id: ConnectionId,
    origin: &Origin,
    adopted: Option<DetachedSession>,
) -> OpenedSession {
    let negotiated = negotiated(instance, 3600);
    let now = Instant::now();
    instance.open_session(&negotiated, false, id, link(), None, origin, adopted, now)
}

/// Builds an offline session on `a` with two subscriptions and a queued QoS 1 message. In
/// flight are a QoS 1 and a QoS 2 PUBLISH and a QoS 2 message that got PUBREC. Inbound packet
/// id 7 awaits PUBREL.
fn offline_session_on(a: &Arc<Instance>) {
    let opened = open(a, ON_A, &global(), None);
    let slot = &opened.slot;
    let outcome = a.subscribe(
        slot,
        ON_A,
        "sensors/#",
        subscriber(QoS::ExactlyOnce, Some(4)),
    );
    assert_eq!(outcome, SubscribeOutcome::Subscribed { replaced: false });
    let shared = subscriber(QoS::AtLeastOnce, None);
    let outcome = a.subscribe(slot, ON_A, "$share/g/alerts/#", shared);
    assert_eq!(outcome, SubscribeOutcome::Subscribed { replaced: false });

    assert_eq!(
        a.publish(message("sensors/1", QoS::AtLeastOnce, b"q1-inflight")),
        1
    );
    assert_eq!(
        a.publish(message("sensors/2", QoS::ExactlyOnce, b"q2-inflight")),
        1
    );
    assert_eq!(
        a.publish(message("sensors/3", QoS::ExactlyOnce, b"q2-received")),
        1
    );
    let now = Instant::now();
    let mut session = slot.lock();
    let mut packet_ids = Vec::new();
    for _ in 0..3 {
        let publish = expect_publish(session.poll_transmit(now));
        packet_ids.push(publish.packet_id.expect("QoS 1 and 2 have a packet id"));
    }
    assert_eq!(
        session.handle_pubrec(packet_ids[2], ReasonCode::SUCCESS),
        AckOutcome::Accepted
    );
    assert!(matches!(
        session.poll_transmit(now),
        Some(Packet::PubRel(_))
    ));
    assert_eq!(session.handle_publish_qos2(7, 10), InboundQoS2::New);
    drop(session);

    a.close_session(slot, ON_A, Instant::now(), true);
    assert_eq!(
        a.publish(message("alerts/1", QoS::AtLeastOnce, b"q1-queued")),
        1
    );
}

#[tokio::test]
async fn take_and_adopt_keep_session_state() {
    let a = instance("a");
    let b = instance("b");
    offline_session_on(&a);

    let detached = a
        .take_detached_session(CLIENT, &global())
        .await
        .expect("offline session is taken");
    assert_eq!(detached.client_id(), CLIENT);
    assert_eq!(detached.subscription_count(), 2);
    assert_eq!(detached.queued_len(), 1);
    assert_eq!(detached.inflight_len(), 3);
    assert_eq!(detached.unreleased_len(), 1);
    assert!(!a.has_session(CLIENT));
    assert_eq!(a.subscription_count(), 0);
    assert_eq!(
        a.publish(message("sensors/9", QoS::AtLeastOnce, b"after")),
        0,
        "messages published on the old instance no longer reach the session"
    );

    let opened = open(&b, ON_B, &global(), Some(detached));
    assert!(opened.session_present);
    assert_eq!(b.subscription_count(), 2);
    assert!(b.is_connected(CLIENT));

    let now = Instant::now();
    let mut session = opened.slot.lock();
    let first = expect_publish(session.poll_transmit(now));
    assert!(first.dup, "inflight QoS 1 message is resent with DUP");
    assert_eq!(first.payload, Bytes::from_static(b"q1-inflight"));
    assert_eq!(first.properties.subscription_identifiers, vec![4]);
    let second = expect_publish(session.poll_transmit(now));
    assert!(second.dup, "inflight QoS 2 message is resent with DUP");
    assert_eq!(second.payload, Bytes::from_static(b"q2-inflight"));
    assert_eq!(second.qos, QoS::ExactlyOnce);
    assert!(
        matches!(session.poll_transmit(now), Some(Packet::PubRel(_))),
        "PUBREL of the message that got PUBREC is resent"
    );
    let queued = expect_publish(session.poll_transmit(now));
    assert!(!queued.dup);
    assert_eq!(queued.payload, Bytes::from_static(b"q1-queued"));
    assert_eq!(session.poll_transmit(now), None);
    assert!(session.is_inbound_unreleased(7));
    assert_eq!(
        session.handle_publish_qos2(7, 10),
        InboundQoS2::Duplicate,
        "a resent inbound QoS 2 PUBLISH is not delivered again"
    );
    drop(session);

    assert_eq!(
        b.publish(message("alerts/2", QoS::AtLeastOnce, b"shared")),
        1,
        "shared subscription membership moved"
    );
    assert_eq!(
        b.publish(message("sensors/4", QoS::AtLeastOnce, b"own")),
        1,
        "own subscription moved"
    );
}

#[tokio::test]
async fn connected_session_is_not_taken() {
    let a = instance("a");
    let opened = open(&a, ON_A, &global(), None);
    assert!(a.take_detached_session(CLIENT, &global()).await.is_none());
    assert!(a.has_session(CLIENT));
    assert!(opened.slot.lock().is_owned_by(ON_A));
}

#[tokio::test]
async fn session_of_other_origin_is_not_taken() {
    let a = instance("a");
    let opened = open(&a, ON_A, &Origin::Region, None);
    a.close_session(&opened.slot, ON_A, Instant::now(), true);
    assert!(a.take_detached_session(CLIENT, &global()).await.is_none());
    let other_group = Origin::Global {
        group: "other".to_owned(),
    };
    assert!(
        a.take_detached_session(CLIENT, &other_group)
            .await
            .is_none()
    );
    assert!(a.has_session(CLIENT));
}

#[tokio::test]
async fn expired_session_is_not_taken() {
    let a = instance("a");
    let negotiated = negotiated(&a, 1);
    let long_ago = Instant::now() - Duration::from_secs(10);
    let opened = a.open_session(
        &negotiated,
        false,
        ON_A,
        link(),
        None,
        &global(),
        None,
        long_ago,
    );
    a.close_session(&opened.slot, ON_A, long_ago, true);
    assert!(a.take_detached_session(CLIENT, &global()).await.is_none());
}

#[tokio::test]
async fn take_waits_for_closing_connection() {
    let a = instance("a");
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let handle = ConnectionHandle::new(
        ON_A,
        ClientId::new(CLIENT),
        None,
        ProtocolVersion::V5,
        global(),
        peer,
    );
    a.register(handle.clone());
    let opened = open(&a, ON_A, &global(), None);
    handle.disconnect(ReasonCode::USE_ANOTHER_SERVER);

    let closing = Arc::clone(&a);
    let slot = Arc::clone(&opened.slot);
    let close = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closing.close_session(&slot, ON_A, Instant::now(), true);
    });
    let detached = a.take_detached_session(CLIENT, &global()).await;
    assert!(
        detached.is_some(),
        "taken once the closing connection detached"
    );
    close.await.expect("close task ends");
}

#[tokio::test]
async fn adopted_session_replaces_one_opened_meanwhile() {
    let a = instance("a");
    let b = instance("b");
    offline_session_on(&a);
    let detached = a
        .take_detached_session(CLIENT, &global())
        .await
        .expect("offline session is taken");

    let fresh = open(&b, ConnectionId(5), &global(), None);
    assert!(!fresh.session_present);
    let adopted = open(&b, ON_B, &global(), Some(detached));
    assert!(adopted.session_present);
    assert!(!fresh.slot.lock().is_owned_by(ConnectionId(5)));
    assert_eq!(b.session_count(), 1);
    assert_eq!(b.subscription_count(), 2);
}
