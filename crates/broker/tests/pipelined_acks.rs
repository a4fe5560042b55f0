//! Acknowledgements of QoS 1 and 2 PUBLISH packets whose store writes are pending. The server
//! reads on while they are, and sends PUBACK or PUBREC only after the commit and in the order
//! the PUBLISH packets arrived. It stops reading while Receive Maximum replies are pending.
//!
//! The tests run the broker over `GatedStore`, a SQLite message store whose completions wait
//! until the test opens a gate, and which can fail chosen writes.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{AllowAll, RawClient, connect_packet, publish_packet};
use switchyard_broker::{Instance, InstanceSettings};
use switchyard_codec::{Ack, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};
use switchyard_store::{
    InstanceState, MessageStore, MessageStoreSettings, MessageStoreStats, PurgeReport,
    SqliteMessageStore, StoreError, StoreFuture, UnixMillis, WriteBatch,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a test waits to conclude that the broker sends nothing.
const QUIET: Duration = Duration::from_millis(300);

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// A message store whose `submit` futures complete only while the gate is open. The batch
/// itself reaches SQLite at once, so the commit order is the submission order, as in the
/// real store.
struct GatedStore {
    inner: SqliteMessageStore,
    open: watch::Sender<bool>,
    submits: AtomicUsize,
    /// One entry per coming `submit`: `true` makes it fail without storing anything.
    failures: Mutex<VecDeque<bool>>,
}

impl GatedStore {
    fn set_open(&self, open: bool) {
        self.open.send_replace(open);
    }

    fn submits(&self) -> usize {
        self.submits.load(Ordering::SeqCst)
    }

    fn plan_failures(&self, plan: &[bool]) {
        let mut failures = self.failures.lock().expect("failure plan lock");
        failures.clear();
        failures.extend(plan);
    }
}

impl MessageStore for GatedStore {
    fn submit(&self, batch: WriteBatch) -> StoreFuture<()> {
        self.submits.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures
            .lock()
            .expect("failure plan lock")
            .pop_front()
            .unwrap_or(false);
        let write = (!fail).then(|| self.inner.submit(batch));
        let mut open = self.open.subscribe();
        Box::pin(async move {
            let result = match write {
                Some(write) => write.await,
                None => Err(StoreError::CommitFailed {
                    path: "gated-test-store".into(),
                    message: "failure planned by the test".to_owned(),
                }),
            };
            let _ = open.wait_for(|open| *open).await;
            result
        })
    }

    fn submit_atomic(&self, batches: Vec<WriteBatch>) -> StoreFuture<()> {
        self.inner.submit_atomic(batches)
    }

    fn load_all_at(&self, instance_id: &str, now: UnixMillis) -> StoreFuture<InstanceState> {
        self.inner.load_all_at(instance_id, now)
    }

    fn purge_expired(&self, now: UnixMillis) -> StoreFuture<PurgeReport> {
        self.inner.purge_expired(now)
    }

    fn compact(&self) -> StoreFuture<()> {
        self.inner.compact()
    }

    fn stats(&self) -> MessageStoreStats {
        self.inner.stats()
    }
}

/// An instance over a [`GatedStore`] on an ephemeral port. The directory lives as long as it.
struct GatedBroker {
    store: Arc<GatedStore>,
    instance: Arc<Instance>,
    addr: SocketAddr,
    stop: CancellationToken,
    _directory: tempfile::TempDir,
}

impl GatedBroker {
    async fn start(settings: InstanceSettings) -> GatedBroker {
        let directory = tempfile::tempdir().expect("temporary directory");
        let inner = SqliteMessageStore::open(directory.path(), MessageStoreSettings::default())
            .expect("open the message store");
        let store = Arc::new(GatedStore {
            inner,
            open: watch::Sender::new(true),
            submits: AtomicUsize::new(0),
            failures: Mutex::new(VecDeque::new()),
        });
        let dyn_store: Arc<dyn MessageStore> = Arc::clone(&store) as Arc<dyn MessageStore>;
        let instance = Instance::with_store(settings, Arc::new(AllowAll), dyn_store)
            .await
            .expect("start the instance over the store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("listener address");
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&instance).serve(listener, stop.clone()));
        GatedBroker {
            store,
            instance,
            addr,
            stop,
            _directory: directory,
        }
    }

    /// Leaves an offline persistent session subscribed to `t/#` at `qos`, so every PUBLISH
    /// to `t/...` at QoS 1 or 2 has a store write.
    async fn offline_subscriber(&self, qos: QoS) {
        let (mut subscriber, _) =
            RawClient::connect_ok(self.addr, connect_packet(V311, "sub", false)).await;
        subscriber.subscribe(1, &[("t/#", qos)]).await;
        drop(subscriber);
        let instance = Arc::clone(&self.instance);
        common::wait_until("the subscriber is offline", || {
            !instance.is_connected("sub")
        })
        .await;
    }

    /// Reconnects the subscriber and returns the payloads of `count` messages, acknowledging
    /// each, and fails if one more arrives.
    async fn drain_subscriber(&self, count: usize) -> Vec<Vec<u8>> {
        let (mut subscriber, connack) =
            RawClient::connect_ok(self.addr, connect_packet(V311, "sub", false)).await;
        assert!(connack.session_present);
        let mut payloads = Vec::new();
        let mut open_qos2 = 0;
        while payloads.len() < count || open_qos2 > 0 {
            match subscriber.recv().await {
                Some(Packet::Publish(publish)) => {
                    payloads.push(publish.payload.to_vec());
                    let id = publish.packet_id.expect("QoS 1 and 2 have packet ids");
                    if publish.qos == QoS::ExactlyOnce {
                        open_qos2 += 1;
                        subscriber.send(&Packet::PubRec(Ack::new(id))).await;
                    } else {
                        subscriber.send(&Packet::PubAck(Ack::new(id))).await;
                    }
                }
                Some(Packet::PubRel(ack)) => {
                    open_qos2 -= 1;
                    subscriber
                        .send(&Packet::PubComp(Ack::new(ack.packet_id)))
                        .await;
                }
                other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
            }
        }
        let extra = subscriber.try_recv(QUIET).await;
        assert!(extra.is_none(), "message delivered twice: {extra:?}");
        payloads
    }

    /// Waits until the store has seen `count` submits in all.
    async fn wait_for_submits(&self, count: usize) {
        let store = Arc::clone(&self.store);
        common::wait_until("the writes are submitted", || store.submits() >= count).await;
    }

    async fn stop(self) {
        self.store.set_open(true);
        self.stop.cancel();
        self.instance.shutdown().await;
    }
}

fn publish(qos: QoS, packet_id: u16) -> Packet {
    let payload = format!("m{packet_id}");
    Packet::Publish(publish_packet(
        &format!("t/{packet_id}"),
        qos,
        Some(packet_id),
        payload.as_bytes(),
    ))
}

fn payloads(ids: impl IntoIterator<Item = u16>) -> Vec<Vec<u8>> {
    ids.into_iter()
        .map(|id| format!("m{id}").into_bytes())
        .collect()
}

/// Returns the packet id and reason code of a PUBACK, failing on anything else.
fn puback(packet: Option<Packet>) -> (u16, ReasonCode) {
    match packet {
        Some(Packet::PubAck(ack)) => (ack.packet_id, ack.reason),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn pubrec(packet: Option<Packet>) -> (u16, ReasonCode) {
    match packet {
        Some(Packet::PubRec(ack)) => (ack.packet_id, ack.reason),
        other => panic!("expected PUBREC, got {other:?}"),
    }
}

#[tokio::test]
async fn qos1_publishes_are_read_before_commit() {
    for version in [V5, V311] {
        let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
        broker.offline_subscriber(QoS::AtLeastOnce).await;
        let (mut publisher, _) =
            RawClient::connect_ok(broker.addr, connect_packet(version, "pub", true)).await;
        let before = broker.store.submits();

        broker.store.set_open(false);
        for id in 1..=8 {
            publisher.send(&publish(QoS::AtLeastOnce, id)).await;
        }
        publisher.send(&Packet::PingReq).await;

        // The server replies to the PINGREQ after the eight PUBLISH packets while none of
        // them is committed.
        let first = publisher.recv().await;
        assert!(
            matches!(first, Some(Packet::PingResp)),
            "{version:?}: expected PINGRESP before any PUBACK, got {first:?}"
        );
        broker.wait_for_submits(before + 8).await;
        let early = publisher.try_recv(QUIET).await;
        assert!(
            early.is_none(),
            "{version:?}: reply before commit: {early:?}"
        );

        broker.store.set_open(true);
        for id in 1..=8 {
            let (acked, reason) = puback(publisher.recv().await);
            assert_eq!(acked, id, "{version:?}: PUBACKs out of order");
            assert_eq!(reason, ReasonCode::SUCCESS);
        }
        assert_eq!(broker.drain_subscriber(8).await, payloads(1..=8));
        broker.stop().await;
    }
}

#[tokio::test]
async fn immediate_reply_waits_behind_pending_ones() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "pub", true)).await;

    broker.store.set_open(false);
    publisher.send(&publish(QoS::AtLeastOnce, 1)).await;
    // No session subscribes to `other/...`, so its PUBACK needs no write.
    let unstored = publish_packet("other/x", QoS::AtLeastOnce, Some(2), b"x");
    publisher.send(&Packet::Publish(unstored)).await;
    // Rejected with 0x87, also without a write.
    let forbidden = publish_packet("forbidden/x", QoS::AtLeastOnce, Some(3), b"x");
    publisher.send(&Packet::Publish(forbidden)).await;
    publisher.ping().await;
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "reply before the first commit: {early:?}");

    broker.store.set_open(true);
    assert_eq!(puback(publisher.recv().await), (1, ReasonCode::SUCCESS));
    assert_eq!(puback(publisher.recv().await), (2, ReasonCode::SUCCESS));
    assert_eq!(
        puback(publisher.recv().await),
        (3, ReasonCode::NOT_AUTHORIZED)
    );
    broker.stop().await;
}

#[tokio::test]
async fn qos2_duplicate_is_answered_after_commit() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "pub", true)).await;
    let before = broker.store.submits();

    broker.store.set_open(false);
    for id in 1..=3 {
        publisher.send(&publish(QoS::ExactlyOnce, id)).await;
    }
    publisher.ping().await;
    broker.wait_for_submits(before + 3).await;
    // The client sends message 2 again before its PUBREC, as after a reconnect.
    let Packet::Publish(mut resend) = publish(QoS::ExactlyOnce, 2) else {
        unreachable!("publish builds a PUBLISH");
    };
    resend.dup = true;
    publisher.send(&Packet::Publish(resend)).await;
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "PUBREC before commit: {early:?}");

    broker.store.set_open(true);
    for id in [1, 2, 3, 2] {
        assert_eq!(pubrec(publisher.recv().await), (id, ReasonCode::SUCCESS));
    }
    for id in 1..=3 {
        publisher.send(&Packet::PubRel(Ack::new(id))).await;
        let completion = publisher.recv().await;
        assert!(
            matches!(&completion, Some(Packet::PubComp(ack))
                if ack.packet_id == id && ack.reason == ReasonCode::SUCCESS),
            "{completion:?}"
        );
    }
    // Message 2 went to the subscriber once.
    assert_eq!(broker.drain_subscriber(3).await, payloads(1..=3));
    broker.stop().await;
}

#[tokio::test]
async fn pubrel_for_pending_id_follows_pubrec() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "pub", true)).await;

    broker.store.set_open(false);
    publisher.send(&publish(QoS::ExactlyOnce, 5)).await;
    publisher.send(&Packet::PubRel(Ack::new(5))).await;
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "reply before commit: {early:?}");

    broker.store.set_open(true);
    assert_eq!(pubrec(publisher.recv().await), (5, ReasonCode::SUCCESS));
    let completion = publisher.recv().await;
    assert!(
        matches!(&completion, Some(Packet::PubComp(ack))
            if ack.packet_id == 5 && ack.reason == ReasonCode::SUCCESS),
        "{completion:?}"
    );
    assert_eq!(broker.drain_subscriber(1).await, payloads([5]));
    broker.stop().await;
}

#[tokio::test]
async fn failed_write_gets_error_reply() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::ExactlyOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "pub", true)).await;

    broker.store.set_open(false);
    broker.store.plan_failures(&[false, true, false, true]);
    for id in 1..=3 {
        publisher.send(&publish(QoS::AtLeastOnce, id)).await;
    }
    publisher.send(&publish(QoS::ExactlyOnce, 4)).await;
    publisher.ping().await;

    broker.store.set_open(true);
    assert_eq!(puback(publisher.recv().await), (1, ReasonCode::SUCCESS));
    assert_eq!(
        puback(publisher.recv().await),
        (2, ReasonCode::UNSPECIFIED_ERROR)
    );
    assert_eq!(puback(publisher.recv().await), (3, ReasonCode::SUCCESS));
    assert_eq!(
        pubrec(publisher.recv().await),
        (4, ReasonCode::UNSPECIFIED_ERROR)
    );

    // The failed QoS 2 message released its packet id, so sending it again stores it.
    publisher.send(&publish(QoS::ExactlyOnce, 4)).await;
    assert_eq!(pubrec(publisher.recv().await), (4, ReasonCode::SUCCESS));
    publisher.send(&Packet::PubRel(Ack::new(4))).await;
    let completion = publisher.recv().await;
    assert!(
        matches!(&completion, Some(Packet::PubComp(ack)) if ack.reason == ReasonCode::SUCCESS),
        "{completion:?}"
    );
    // NOTE: a failed write leaves its deliveries queued in memory, as before pipelining, so
    // the subscriber gets messages 2 and the first 4 although the store has neither.
    assert_eq!(broker.drain_subscriber(5).await, payloads([1, 2, 3, 4, 4]));
    broker.stop().await;
}

#[tokio::test]
async fn failed_write_ends_v311_connection() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V311, "pub", true)).await;

    broker.store.set_open(false);
    broker.store.plan_failures(&[false, true, false]);
    for id in 1..=3 {
        publisher.send(&publish(QoS::AtLeastOnce, id)).await;
    }
    publisher.ping().await;
    broker.store.set_open(true);

    // Message 1 is acknowledged; the failure of 2 closes the connection, so 3 gets no reply
    // although it was stored.
    let packets = publisher.expect_closed().await;
    let acked: Vec<u16> = packets
        .iter()
        .map(|packet| match packet {
            Packet::PubAck(ack) => ack.packet_id,
            other => panic!("expected only PUBACK, got {other:?}"),
        })
        .collect();
    assert_eq!(acked, [1]);
    // The failed message 2 stays queued in memory, as in `failed_write_gets_error_reply`.
    assert_eq!(broker.drain_subscriber(3).await, payloads(1..=3));
    broker.stop().await;
}

#[tokio::test]
async fn reading_pauses_at_receive_maximum() {
    let mut settings = InstanceSettings::new("mqtt-pipeline");
    settings.receive_maximum = 4;
    let broker = GatedBroker::start(settings).await;
    broker.offline_subscriber(QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V311, "pub", true)).await;
    let before = broker.store.submits();

    broker.store.set_open(false);
    for id in 1..=6 {
        publisher.send(&publish(QoS::AtLeastOnce, id)).await;
    }
    publisher.send(&Packet::PingReq).await;
    broker.wait_for_submits(before + 4).await;
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "reply while reading is paused: {early:?}");
    assert_eq!(
        broker.store.submits(),
        before + 4,
        "PUBLISH handled past the limit"
    );

    broker.store.set_open(true);
    let mut acked = Vec::new();
    let mut ping_answered = false;
    while acked.len() < 6 || !ping_answered {
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => acked.push(ack.packet_id),
            Some(Packet::PingResp) => ping_answered = true,
            other => panic!("expected PUBACK or PINGRESP, got {other:?}"),
        }
    }
    assert_eq!(acked, [1, 2, 3, 4, 5, 6]);
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_keeps_pending_replies() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V311, "pub", true)).await;

    broker.store.set_open(false);
    for id in 1..=3 {
        publisher.send(&publish(QoS::AtLeastOnce, id)).await;
    }
    let disconnect = Disconnect {
        reason: ReasonCode::SUCCESS,
        properties: Default::default(),
    };
    publisher.send(&Packet::Disconnect(disconnect)).await;
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "reply before commit: {early:?}");

    // The connection closes only after the writes, and sends their PUBACKs first.
    broker.store.set_open(true);
    let packets = publisher.expect_closed().await;
    let acked: Vec<u16> = packets
        .iter()
        .map(|packet| match packet {
            Packet::PubAck(ack) => ack.packet_id,
            other => panic!("expected only PUBACK, got {other:?}"),
        })
        .collect();
    assert_eq!(acked, [1, 2, 3]);
    assert_eq!(broker.drain_subscriber(3).await, payloads(1..=3));
    broker.stop().await;
}

#[tokio::test]
async fn takeover_keeps_pending_replies() {
    let broker = GatedBroker::start(InstanceSettings::new("mqtt-pipeline")).await;
    broker.offline_subscriber(QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V311, "pub", false)).await;

    broker.store.set_open(false);
    for id in 1..=3 {
        publisher.send(&publish(QoS::AtLeastOnce, id)).await;
    }
    publisher.ping().await;

    // A second connection with the same client id takes the session over. Its CONNACK waits
    // for its own store write, which commits after the three messages.
    let addr = broker.addr;
    let takeover = tokio::spawn(async move {
        RawClient::connect_ok(addr, connect_packet(V311, "pub", false)).await
    });
    let early = publisher.try_recv(QUIET).await;
    assert!(early.is_none(), "reply before commit: {early:?}");

    broker.store.set_open(true);
    let packets = publisher.expect_closed().await;
    let acked: Vec<u16> = packets
        .iter()
        .map(|packet| match packet {
            Packet::PubAck(ack) => ack.packet_id,
            other => panic!("expected only PUBACK, got {other:?}"),
        })
        .collect();
    assert_eq!(acked, [1, 2, 3]);
    let (_successor, connack) = takeover.await.expect("takeover task");
    assert!(connack.session_present);
    assert_eq!(broker.drain_subscriber(3).await, payloads(1..=3));
    broker.stop().await;
}
