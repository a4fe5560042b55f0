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
use switchyard_store::{
    MessageStore, MessageStoreSettings, SqliteMessageStore, StoredMessage, WriteBatch, WriteOp,
};

const CLIENT: &str = "GID_t@@@moved";
const ON_A: ConnectionId = ConnectionId(1);
const ON_B: ConnectionId = ConnectionId(2);

struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, connect: &Connect, _peer: SocketAddr) -> Result<Identity, ReasonCode> {
        Ok(Identity::of_connect("test", connect))
    }

    fn authorize(&self, _: &Identity, _: Access, _: &str) -> Result<(), ReasonCode> {
        Ok(())
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

/// Publishes `message` on `instance` and waits for its store write, if any, because the
/// deliveries are not sent before it commits.
async fn publish_stored(instance: &Instance, message: Message) -> usize {
    let published = instance.publish_with(message, Vec::new());
    if let Some(write) = published.write {
        write.await.expect("the message is stored");
    }
    published.receivers
}

/// Sends the three messages pending for the session in `slot`, handles a PUBREC for the third
/// and records inbound QoS 2 packet id 7 as awaiting PUBREL.
fn send_and_acknowledge_some(slot: &SessionSlot) {
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
}

/// Builds an offline session on `a` with two subscriptions and a queued QoS 1 message. In
/// flight are a QoS 1 and a QoS 2 PUBLISH and a QoS 2 message that got PUBREC. Inbound packet
/// id 7 awaits PUBREL.
async fn offline_session_on(a: &Arc<Instance>) {
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
        publish_stored(a, message("sensors/1", QoS::AtLeastOnce, b"q1-inflight")).await,
        1
    );
    assert_eq!(
        publish_stored(a, message("sensors/2", QoS::ExactlyOnce, b"q2-inflight")).await,
        1
    );
    assert_eq!(
        publish_stored(a, message("sensors/3", QoS::ExactlyOnce, b"q2-received")).await,
        1
    );
    send_and_acknowledge_some(slot);

    a.close_session(slot, ON_A, Instant::now(), true);
    assert_eq!(
        publish_stored(a, message("alerts/1", QoS::AtLeastOnce, b"q1-queued")).await,
        1
    );
}

#[tokio::test]
async fn take_and_adopt_keep_session_state() {
    let a = instance("a");
    let b = instance("b");
    offline_session_on(&a).await;

    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
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
    let b = instance("b");
    let opened = open(&a, ON_A, &global(), None);
    assert!(
        a.take_detached_session(CLIENT, &global(), &b)
            .await
            .is_none()
    );
    assert!(a.has_session(CLIENT));
    assert!(opened.slot.lock().is_owned_by(ON_A));
}

#[tokio::test]
async fn session_of_other_origin_is_not_taken() {
    let a = instance("a");
    let b = instance("b");
    let opened = open(&a, ON_A, &Origin::Region, None);
    a.close_session(&opened.slot, ON_A, Instant::now(), true);
    assert!(
        a.take_detached_session(CLIENT, &global(), &b)
            .await
            .is_none()
    );
    let other_group = Origin::Global {
        group: "other".to_owned(),
    };
    assert!(
        a.take_detached_session(CLIENT, &other_group, &b)
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
    let b = instance("b");
    assert!(
        a.take_detached_session(CLIENT, &global(), &b)
            .await
            .is_none()
    );
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
    let b = instance("b");
    let detached = a.take_detached_session(CLIENT, &global(), &b).await;
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
    offline_session_on(&a).await;
    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
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

fn open_store(dir: &std::path::Path, settings: MessageStoreSettings) -> Arc<dyn MessageStore> {
    Arc::new(SqliteMessageStore::open(dir, settings).expect("message store opens"))
}

async fn stored_instance(id: &str, store: &Arc<dyn MessageStore>) -> Arc<Instance> {
    let settings = InstanceSettings::new(id);
    Instance::with_store(settings, Arc::new(AllowAll), Arc::clone(store))
        .await
        .expect("instance loads its state")
}

/// Shuts the instances down and drops them with the store, which closes the database.
async fn stop(instances: Vec<Arc<Instance>>, store: Arc<dyn MessageStore>) {
    for instance in &instances {
        instance.shutdown().await;
    }
    drop(instances);
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "only the test holds the store"
    );
    drop(store);
}

#[tokio::test]
async fn moved_session_is_stored_on_adopter() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
        .await
        .expect("offline session is taken");
    // The move committed before the take returned.
    let on_a = store.load_all("a").await.expect("store loads a");
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);
    let moved = &on_b.sessions[0];
    assert_eq!(moved.session.client_id, CLIENT);
    assert_eq!(moved.session.subscriptions.len(), 2);
    assert_eq!(moved.queue.len(), 1);
    assert_eq!(moved.queue[0].1.payload, b"q1-queued");
    assert_eq!(moved.inflight.len(), 3);
    assert_eq!(moved.incoming_qos2, vec![7]);

    let opened = open(&b, ON_B, &global(), Some(detached));
    assert!(opened.session_present);
    let write = opened.store_write.expect("the adopted session is written");
    write.await.expect("the adopted session commits");
    b.close_session(&opened.slot, ON_B, Instant::now(), true);
    drop(opened.slot);
    stop(vec![a, b], store).await;

    // A restart finds the session on b alone, with its queue and its messages in flight.
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    assert!(!a.has_session(CLIENT), "a gave the session up for good");
    assert_eq!(a.subscription_count(), 0);
    assert!(b.has_session(CLIENT));
    assert_eq!(b.subscription_count(), 2);

    let opened = open(&b, ON_B, &global(), None);
    assert!(opened.session_present, "b resumes the restored session");
    let now = Instant::now();
    let mut session = opened.slot.lock();
    let first = expect_publish(session.poll_transmit(now));
    assert!(first.dup);
    assert_eq!(first.payload, Bytes::from_static(b"q1-inflight"));
    let second = expect_publish(session.poll_transmit(now));
    assert!(second.dup);
    assert_eq!(second.payload, Bytes::from_static(b"q2-inflight"));
    assert!(matches!(
        session.poll_transmit(now),
        Some(Packet::PubRel(_))
    ));
    let queued = expect_publish(session.poll_transmit(now));
    assert_eq!(queued.payload, Bytes::from_static(b"q1-queued"));
    assert_eq!(session.poll_transmit(now), None);
    assert!(session.is_inbound_unreleased(7));
}

#[tokio::test]
async fn failed_move_keeps_session_on_giver() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = MessageStoreSettings {
        max_instance_bytes: 4096,
        ..MessageStoreSettings::default()
    };
    let store = open_store(dir.path(), settings);
    // b's storage is nearly full, so the whole session cannot be written there.
    let filler = StoredMessage {
        topic: "filler".to_owned(),
        payload: vec![0; 3900],
        qos: 1,
        retain: true,
        properties: Vec::new(),
        expires_at: None,
    };
    store
        .submit(WriteBatch::new("b").with(WriteOp::PutRetained(filler)))
        .await
        .expect("filler fits");
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    let result = a.take_detached_session(CLIENT, &global(), &b).await;
    assert!(result.is_none(), "the move failed in the store");
    assert!(a.has_session(CLIENT), "the session went back to a");
    assert!(!a.is_connected(CLIENT));
    assert_eq!(a.subscription_count(), 2);
    assert!(!b.has_session(CLIENT));
    let on_a = store.load_all("a").await.expect("store loads a");
    assert_eq!(on_a.sessions.len(), 1, "the store still has it on a");
    assert_eq!(on_a.sessions[0].queue.len(), 1);
    assert_eq!(on_a.sessions[0].inflight.len(), 3);
    let on_b = store.load_all("b").await.expect("store loads b");
    assert!(on_b.sessions.is_empty(), "{:?}", on_b.sessions);

    assert_eq!(
        a.publish(message("sensors/5", QoS::AtLeastOnce, b"after")),
        1,
        "the session put back receives messages again"
    );
    let opened = open(&a, ON_A, &global(), None);
    assert!(opened.session_present);
    let queued_len = opened.slot.lock().queued_len();
    assert_eq!(queued_len, 2);
}

#[tokio::test]
async fn adopted_session_rewritten_after_replacing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;
    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
        .await
        .expect("offline session is taken");

    // A session of the client opened on b after the move ends when the adopted one replaces
    // it, and that end removes the client's records on b, the moved ones included.
    let fresh = open(&b, ConnectionId(5), &global(), None);
    if let Some(write) = fresh.store_write {
        write.await.expect("the fresh session commits");
    }
    let adopted = open(&b, ON_B, &global(), Some(detached));
    assert!(adopted.session_present);
    let write = adopted.store_write.expect("the adopted session is written");
    write.await.expect("the adopted session commits");

    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);
    assert_eq!(on_b.sessions[0].session.subscriptions.len(), 2);
    assert_eq!(on_b.sessions[0].queue.len(), 1);
    assert_eq!(on_b.sessions[0].inflight.len(), 3);
    assert_eq!(on_b.sessions[0].incoming_qos2, vec![7]);
    assert!(
        store
            .load_all("a")
            .await
            .expect("store loads a")
            .sessions
            .is_empty()
    );
}

/// Opens the session of `CLIENT` on `instance` through `origin`, waits until the store has it
/// and closes it again.
async fn visit(instance: &Arc<Instance>, origin: &Origin) {
    let opened = open(instance, ON_A, origin, None);
    let write = opened.store_write.expect("a persistent session is written");
    write.await.expect("the session commits");
    instance.close_session(&opened.slot, ON_A, Instant::now(), true);
}

#[tokio::test]
async fn restored_global_session_is_taken() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;
    stop(vec![a, b], store).await;

    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
        .await
        .expect("the restored session keeps its global-endpoint origin");
    assert_eq!(detached.subscription_count(), 2);
    assert_eq!(detached.queued_len(), 1);
    assert_eq!(detached.inflight_len(), 3);
    assert_eq!(detached.unreleased_len(), 1);
    assert!(!a.has_session(CLIENT));

    let opened = open(&b, ON_B, &global(), Some(detached));
    assert!(opened.session_present);
    let write = opened.store_write.expect("the adopted session is written");
    write.await.expect("the adopted session commits");
    let on_a = store.load_all("a").await.expect("store loads a");
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);
    assert_eq!(on_b.sessions[0].queue.len(), 1);
    assert_eq!(on_b.sessions[0].inflight.len(), 3);
}

#[tokio::test]
async fn restored_origin_is_last_connection() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    visit(&a, &global()).await;
    visit(&a, &Origin::Region).await;
    stop(vec![a, b], store).await;

    // The device came through the region listener last, so its session stays.
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    let taken = a.take_detached_session(CLIENT, &global(), &b).await;
    assert!(taken.is_none(), "a region-listener session is not taken");
    assert!(a.has_session(CLIENT));
    visit(&a, &global()).await;
    stop(vec![a, b], store).await;

    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    let other_group = Origin::Global {
        group: "other".to_owned(),
    };
    let taken = a.take_detached_session(CLIENT, &other_group, &b).await;
    assert!(taken.is_none(), "the session belongs to group \"global\"");
    let taken = a.take_detached_session(CLIENT, &global(), &b).await;
    assert!(
        taken.is_some(),
        "the last connection came through the endpoint"
    );
}

#[tokio::test]
async fn publish_racing_take_commits_first() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // One write slot and a paused writer, so every write below waits in the store and the
    // commit order is the order of the submit calls alone.
    let settings = MessageStoreSettings {
        max_pending_batches: 1,
        ..MessageStoreSettings::default()
    };
    let sqlite = Arc::new(SqliteMessageStore::open(dir.path(), settings).expect("store opens"));
    let store: Arc<dyn MessageStore> = Arc::clone(&sqlite) as Arc<dyn MessageStore>;
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    let pause = sqlite.pause_writer();
    let published = a.publish_with(message("alerts/2", QoS::AtLeastOnce, b"racing"), Vec::new());
    let write = published
        .write
        .expect("the delivery to the stored session is written");
    // The take submits its move after the publish, and waits for the move before anything
    // polls the publish's write.
    let origin = global();
    let detached = {
        let take = a.take_detached_session(CLIENT, &origin, &b);
        tokio::pin!(take);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), &mut take).await;
        assert!(early.is_err(), "the move waits for the paused writer");
        drop(pause);
        take.await.expect("offline session is taken")
    };
    write
        .await
        .expect("the publish commits before the move removes the session");

    assert_eq!(
        detached.queued_len(),
        2,
        "the message was routed before the take"
    );
    let on_a = store.load_all("a").await.expect("store loads a");
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);
    let payloads: Vec<&[u8]> = on_b.sessions[0]
        .queue
        .iter()
        .map(|(_, message)| message.payload.as_slice())
        .collect();
    assert_eq!(payloads, vec![&b"q1-queued"[..], &b"racing"[..]]);

    drop(detached);
    drop(sqlite);
    stop(vec![a, b], store).await;
}

#[tokio::test]
async fn pending_changes_commit_before_move() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = MessageStoreSettings {
        max_pending_batches: 1,
        ..MessageStoreSettings::default()
    };
    let sqlite = Arc::new(SqliteMessageStore::open(dir.path(), settings).expect("store opens"));
    let store: Arc<dyn MessageStore> = Arc::clone(&sqlite) as Arc<dyn MessageStore>;
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    // A change recorded and not yet submitted when the take starts. The take submits it to
    // a background task and then waits for the move, so only the store's call order keeps
    // it from committing after the removal and storing the session on a again.
    let slot = a
        .read_registry()
        .sessions
        .get(CLIENT)
        .cloned()
        .expect("the session is on a");
    slot.lock().record_session();
    drop(slot);
    let pause = sqlite.pause_writer();
    let origin = global();
    let detached = {
        let take = a.take_detached_session(CLIENT, &origin, &b);
        tokio::pin!(take);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), &mut take).await;
        assert!(early.is_err(), "the move waits for the paused writer");
        drop(pause);
        take.await.expect("offline session is taken")
    };

    // A load runs after every write submitted before it, the background one included.
    let on_a = store.load_all("a").await.expect("store loads a");
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);

    drop(detached);
    drop(sqlite);
    stop(vec![a, b], store).await;
}

/// Opens a store in `dir` in which instance b has 3,900 of its 4,096 bytes used, so that
/// moving the session of `offline_session_on` to b fails.
async fn store_with_full_adopter(dir: &std::path::Path) -> Arc<SqliteMessageStore> {
    let settings = MessageStoreSettings {
        max_instance_bytes: 4096,
        ..MessageStoreSettings::default()
    };
    let store = Arc::new(SqliteMessageStore::open(dir, settings).expect("store opens"));
    let filler = StoredMessage {
        topic: "filler".to_owned(),
        payload: vec![0; 3900],
        qos: 1,
        retain: true,
        properties: Vec::new(),
        expires_at: None,
    };
    store
        .submit(WriteBatch::new("b").with(WriteOp::PutRetained(filler)))
        .await
        .expect("filler fits");
    store
}

#[tokio::test]
async fn session_opened_during_failed_move_stored_alone() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sqlite = store_with_full_adopter(dir.path()).await;
    let store: Arc<dyn MessageStore> = Arc::clone(&sqlite) as Arc<dyn MessageStore>;
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    // The device reconnects to instance a while the move waits for the paused writer, so
    // instance a opens a new session. Then the move fails.
    let pause = sqlite.pause_writer();
    let origin = global();
    let (fresh, write) = {
        let take = a.take_detached_session(CLIENT, &origin, &b);
        tokio::pin!(take);
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), &mut take).await;
        assert!(early.is_err(), "the move waits for the paused writer");
        assert!(!a.has_session(CLIENT), "the session left the registry");
        let fresh = open(&a, ON_A, &origin, None);
        assert!(!fresh.session_present);
        let write = fresh.store_write.expect("the new session is written");
        drop(pause);
        assert!(take.await.is_none(), "the move failed in the store");
        (fresh.slot, write)
    };
    write.await.expect("the new session commits");

    // The store has the new session alone on a, without the old one's messages.
    let on_a = store.load_all("a").await.expect("store loads a");
    assert_eq!(on_a.sessions.len(), 1);
    let stored = &on_a.sessions[0];
    assert!(stored.session.subscriptions.is_empty(), "{stored:?}");
    assert!(stored.queue.is_empty(), "{:?}", stored.queue);
    assert!(stored.inflight.is_empty(), "{:?}", stored.inflight);
    assert!(stored.incoming_qos2.is_empty());
    assert!(
        store
            .load_all("b")
            .await
            .expect("store loads b")
            .sessions
            .is_empty()
    );

    a.close_session(&fresh, ON_A, Instant::now(), true);
    drop(fresh);
    drop(sqlite);
    stop(vec![a, b], store).await;
}

#[tokio::test]
async fn dropped_move_then_new_session_stored_alone() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(dir.path(), MessageStoreSettings::default());
    let a = stored_instance("a", &store).await;
    let b = stored_instance("b", &store).await;
    offline_session_on(&a).await;

    // The move commits, but the session is dropped instead of adopted, so its records stay
    // on b while b's registry has no session of the client.
    let detached = a
        .take_detached_session(CLIENT, &global(), &b)
        .await
        .expect("offline session is taken");
    drop(detached);
    assert!(!b.has_session(CLIENT));
    let fresh = open(&b, ON_B, &global(), None);
    assert!(!fresh.session_present);
    let write = fresh.store_write.expect("the new session is written");
    write.await.expect("the new session commits");

    let on_b = store.load_all("b").await.expect("store loads b");
    assert_eq!(on_b.sessions.len(), 1);
    let stored = &on_b.sessions[0];
    assert!(stored.session.subscriptions.is_empty(), "{stored:?}");
    assert!(stored.queue.is_empty(), "{:?}", stored.queue);
    assert!(stored.inflight.is_empty(), "{:?}", stored.inflight);
    assert!(stored.incoming_qos2.is_empty());

    b.close_session(&fresh.slot, ON_B, Instant::now(), true);
    drop(fresh.slot);
    stop(vec![a, b], store).await;
}
