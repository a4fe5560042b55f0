//! An instance restarted over the same message store: persistent sessions with their
//! subscriptions, queues, messages in flight and inbound QoS 2 ids, and retained messages,
//! come back; clean sessions do not.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{AllowAll, RawClient, connect_packet, publish_packet};
use switchyard_broker::{Instance, InstanceSettings};
use switchyard_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};
use switchyard_store::{MessageStore, MessageStoreSettings, SqliteMessageStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const QUIET: Duration = Duration::from_millis(300);

/// Starts an instance over `store` on an ephemeral port.
async fn start(store: &Arc<dyn MessageStore>) -> (Arc<Instance>, SocketAddr, CancellationToken) {
    let settings = InstanceSettings::new("mqtt-restart");
    let instance = Instance::with_store(settings, Arc::new(AllowAll), Arc::clone(store))
        .await
        .expect("restore the instance from the store");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("listener address");
    let stop = CancellationToken::new();
    tokio::spawn(Arc::clone(&instance).serve(listener, stop.clone()));
    (instance, addr, stop)
}

async fn stop(instance: Arc<Instance>, listener: CancellationToken) {
    listener.cancel();
    instance.shutdown().await;
}

fn topic_of(publish: &Publish) -> &str {
    publish.topic.as_str()
}

#[tokio::test]
async fn restart_restores_persistent_state() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let opened = SqliteMessageStore::open(directory.path(), MessageStoreSettings::default())
        .expect("open the message store");
    let store: Arc<dyn MessageStore> = Arc::new(opened);
    let (instance, addr, listener) = start(&store).await;

    let v311 = ProtocolVersion::V3_1_1;
    let (mut subscriber, _) = RawClient::connect_ok(addr, connect_packet(v311, "sub", false)).await;
    subscriber
        .subscribe(1, &[("q1/#", QoS::AtLeastOnce), ("q2/#", QoS::ExactlyOnce)])
        .await;
    let (mut clean, _) = RawClient::connect_ok(addr, connect_packet(v311, "clean", true)).await;
    clean.subscribe(1, &[("q1/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = RawClient::connect_ok(addr, connect_packet(v311, "pub", false)).await;

    // One message in flight to the subscriber, never acknowledged.
    publisher
        .publish("q1/inflight", QoS::AtLeastOnce, 1, b"a")
        .await;
    let inflight = subscriber.recv_publish().await;
    assert_eq!(topic_of(&inflight), "q1/inflight");
    let inflight_id = inflight.packet_id.expect("QoS 1 has a packet id");
    drop(subscriber);
    drop(clean);
    common::wait_until("the subscriber is offline", || {
        !instance.is_connected("sub")
    })
    .await;

    // Queued while the subscriber is offline.
    publisher
        .publish("q1/queued", QoS::AtLeastOnce, 2, b"b")
        .await;
    publisher
        .publish("q2/queued", QoS::ExactlyOnce, 3, b"c")
        .await;
    // A QoS 2 message received with PUBREC and no PUBREL yet.
    let held = publish_packet("q2/held", QoS::ExactlyOnce, Some(7), b"d");
    publisher.send(&Packet::Publish(held.clone())).await;
    let pubrec = publisher.recv().await;
    assert!(
        matches!(&pubrec, Some(Packet::PubRec(ack)) if ack.packet_id == 7),
        "{pubrec:?}"
    );
    let mut retained = publish_packet("r/x", QoS::AtLeastOnce, Some(8), b"kept");
    retained.retain = true;
    publisher.send(&Packet::Publish(retained)).await;
    let puback = publisher.recv().await;
    assert!(
        matches!(&puback, Some(Packet::PubAck(ack)) if ack.packet_id == 8),
        "{puback:?}"
    );
    drop(publisher);
    stop(instance, listener).await;

    let (instance, addr, listener) = start(&store).await;
    assert_eq!(
        instance.session_count(),
        2,
        "sub and pub, not the clean session"
    );
    assert_eq!(instance.subscription_count(), 2);
    assert_eq!(instance.retained_count(), 1);

    let (mut subscriber, connack) =
        RawClient::connect_ok(addr, connect_packet(v311, "sub", false)).await;
    assert!(connack.session_present);
    let resent = subscriber.recv_publish().await;
    assert_eq!(topic_of(&resent), "q1/inflight");
    assert!(resent.dup, "a resent PUBLISH has DUP set");
    assert_eq!(resent.packet_id, Some(inflight_id));
    subscriber
        .send(&Packet::PubAck(Ack::new(inflight_id)))
        .await;
    // The broker may send the next PUBLISH before PUBREL, so read packets as they come.
    let mut topics = Vec::new();
    let mut open_qos2 = 0;
    while topics.len() < 3 || open_qos2 > 0 {
        match subscriber.recv().await {
            Some(Packet::Publish(publish)) => {
                topics.push(topic_of(&publish).to_owned());
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
    assert_eq!(topics, ["q1/queued", "q2/queued", "q2/held"]);

    // The publisher's resend of the held QoS 2 message is recognized by its packet id.
    let (mut publisher, connack) =
        RawClient::connect_ok(addr, connect_packet(v311, "pub", false)).await;
    assert!(connack.session_present);
    let mut resend = held;
    resend.dup = true;
    publisher.send(&Packet::Publish(resend)).await;
    let pubrec = publisher.recv().await;
    assert!(
        matches!(&pubrec, Some(Packet::PubRec(ack)) if ack.packet_id == 7),
        "{pubrec:?}"
    );
    publisher.send(&Packet::PubRel(Ack::new(7))).await;
    let pubcomp = publisher.recv().await;
    assert!(
        matches!(&pubcomp, Some(Packet::PubComp(ack)) if ack.packet_id == 7),
        "{pubcomp:?}"
    );
    let duplicate = subscriber.try_recv(QUIET).await;
    assert!(duplicate.is_none(), "QoS 2 delivered twice: {duplicate:?}");

    let (mut late, _) = RawClient::connect_ok(addr, connect_packet(v311, "late", true)).await;
    late.subscribe(1, &[("r/#", QoS::AtLeastOnce)]).await;
    let kept = late.recv_publish().await;
    assert_eq!(topic_of(&kept), "r/x");
    assert!(kept.retain);
    assert_eq!(kept.payload.as_ref(), b"kept");
    stop(instance, listener).await;

    // Acknowledged messages are gone from the store after a further restart.
    let (instance, addr, listener) = start(&store).await;
    let (mut subscriber, _) = RawClient::connect_ok(addr, connect_packet(v311, "sub", false)).await;
    let leftover = subscriber.try_recv(QUIET).await;
    assert!(
        leftover.is_none(),
        "acknowledged message sent again: {leftover:?}"
    );
    stop(instance, listener).await;
}
