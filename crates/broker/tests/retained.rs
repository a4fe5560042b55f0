//! Retained messages over the wire: storing, replacing and deleting them, delivery to new
//! subscriptions with the subscription options, and the RETAIN flag on live forwarding.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{AllowAll, RawClient, TestBroker, connect_packet, publish_packet};
use switchyard_broker::InstanceSettings;
use switchyard_codec::{
    Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions,
};

const QUIET: Duration = Duration::from_millis(300);
const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

async fn client(broker: &TestBroker, version: ProtocolVersion, id: &str) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(version, id, true))
        .await
        .0
}

/// Publishes a retained message and waits for its acknowledgement.
async fn publish_retained(publisher: &mut RawClient, topic: &str, qos: QoS, payload: &[u8]) {
    let packet_id = (qos != QoS::AtMostOnce).then_some(7);
    let mut publish = publish_packet(topic, qos, packet_id, payload);
    publish.retain = true;
    publisher.send(&Packet::Publish(publish)).await;
    match qos {
        QoS::AtMostOnce => publisher.ping().await,
        QoS::AtLeastOnce => {
            let ack = publisher.recv().await;
            assert!(matches!(ack, Some(Packet::PubAck(_))), "{ack:?}");
        }
        QoS::ExactlyOnce => {
            let rec = publisher.recv().await;
            assert!(matches!(rec, Some(Packet::PubRec(_))), "{rec:?}");
            publisher
                .send(&Packet::PubRel(switchyard_codec::Ack::new(7)))
                .await;
            let comp = publisher.recv().await;
            assert!(matches!(comp, Some(Packet::PubComp(_))), "{comp:?}");
        }
    }
}

/// Subscribes to one filter with `options` and an optional Subscription Identifier.
async fn subscribe_with(
    client: &mut RawClient,
    filter: &str,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
) -> ReasonCode {
    let subscribe = Subscribe {
        packet_id: 3,
        subscriptions: vec![Subscription {
            filter: filter.into(),
            options,
        }],
        properties: Properties {
            subscription_identifiers: subscription_id.into_iter().collect(),
            ..Properties::default()
        },
    };
    client.send(&Packet::Subscribe(subscribe)).await;
    match client.recv().await {
        Some(Packet::SubAck(suback)) => suback.reasons[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn options(qos: QoS, retain_handling: u8, retain_as_published: bool) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published,
        retain_handling,
    }
}

async fn received_topics(client: &mut RawClient) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(packet) = client.try_recv(QUIET).await {
        match packet {
            Packet::Publish(publish) => topics.push(publish.topic.as_str().to_owned()),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    topics.sort();
    topics
}

#[tokio::test]
async fn new_subscription_gets_retained_message_with_retain_set() {
    for version in [V311, V5] {
        let broker = TestBroker::start().await;
        let mut publisher = client(&broker, version, "lamp").await;
        publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;

        let mut subscriber = client(&broker, version, "panel").await;
        let codes = subscriber
            .subscribe(1, &[("home/+", QoS::AtLeastOnce)])
            .await;
        assert_eq!(codes, [ReasonCode::GRANTED_QOS_1]);
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.topic.as_str(), "home/lamp");
        assert_eq!(&publish.payload[..], b"on");
        assert!(publish.retain, "{version:?}");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }
}

#[tokio::test]
async fn live_forwarding_clears_retain() {
    for version in [V311, V5] {
        let broker = TestBroker::start().await;
        let mut subscriber = client(&broker, version, "panel").await;
        subscriber
            .subscribe(1, &[("home/#", QoS::AtMostOnce)])
            .await;
        let mut publisher = client(&broker, version, "lamp").await;
        publish_retained(&mut publisher, "home/lamp", QoS::AtMostOnce, b"on").await;
        let publish = subscriber.recv_publish().await;
        assert!(!publish.retain, "{version:?}");
    }
}

#[tokio::test]
async fn retain_as_published_keeps_flag() {
    let broker = TestBroker::start().await;
    let mut subscriber = client(&broker, V5, "bridge").await;
    subscribe_with(
        &mut subscriber,
        "home/#",
        options(QoS::AtMostOnce, 0, true),
        None,
    )
    .await;
    let mut publisher = client(&broker, V5, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtMostOnce, b"on").await;
    publisher
        .publish("home/door", QoS::AtMostOnce, 0, b"shut")
        .await;

    let first = subscriber.recv_publish().await;
    assert_eq!(first.topic.as_str(), "home/lamp");
    assert!(first.retain);
    let second = subscriber.recv_publish().await;
    assert_eq!(second.topic.as_str(), "home/door");
    assert!(!second.retain);
}

#[tokio::test]
async fn empty_payload_deletes_retained_message() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V311, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;
    assert_eq!(broker.instance.retained_count(), 1);

    let mut current = client(&broker, V311, "current").await;
    current
        .subscribe(1, &[("home/lamp", QoS::AtLeastOnce)])
        .await;
    assert!(current.recv_publish().await.retain);

    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"").await;
    // Current subscribers still receive the empty message, as an ordinary one.
    let deletion = current.recv_publish().await;
    assert!(deletion.payload.is_empty());
    assert!(!deletion.retain);
    assert_eq!(broker.instance.retained_count(), 0);

    let mut later = client(&broker, V311, "later").await;
    later.subscribe(1, &[("home/#", QoS::AtLeastOnce)]).await;
    assert!(received_topics(&mut later).await.is_empty());
}

#[tokio::test]
async fn newer_retained_message_replaces_older() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"off").await;
    // A message without RETAIN leaves the retained one alone.
    publisher
        .publish("home/lamp", QoS::AtLeastOnce, 9, b"flicker")
        .await;

    let mut subscriber = client(&broker, V5, "panel").await;
    subscriber
        .subscribe(1, &[("home/lamp", QoS::AtLeastOnce)])
        .await;
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"off");
    assert!(subscriber.try_recv(QUIET).await.is_none());
    assert_eq!(broker.instance.retained_count(), 1);
}

#[tokio::test]
async fn retained_messages_match_wildcards_and_dollar_rule() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V311, "publisher").await;
    for topic in ["a/b", "a/b/c", "a/x", "b", "$SYS/info"] {
        publish_retained(&mut publisher, topic, QoS::AtMostOnce, b"x").await;
    }
    let cases: [(&str, &[&str]); 5] = [
        ("a/+", &["a/b", "a/x"]),
        ("a/#", &["a/b", "a/b/c", "a/x"]),
        ("#", &["a/b", "a/b/c", "a/x", "b"]),
        ("$SYS/#", &["$SYS/info"]),
        ("+/b/c", &["a/b/c"]),
    ];
    for (index, (filter, expected)) in cases.into_iter().enumerate() {
        let mut subscriber = client(&broker, V311, &format!("s{index}")).await;
        subscriber.subscribe(1, &[(filter, QoS::AtMostOnce)]).await;
        assert_eq!(received_topics(&mut subscriber).await, expected, "{filter}");
    }
}

#[tokio::test]
async fn retain_handling_controls_delivery() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;
    let mut subscriber = client(&broker, V5, "panel").await;

    // 2: never.
    subscribe_with(
        &mut subscriber,
        "home/#",
        options(QoS::AtLeastOnce, 2, false),
        None,
    )
    .await;
    assert!(received_topics(&mut subscriber).await.is_empty());
    // 1: only for a new subscription, and this filter exists now.
    subscribe_with(
        &mut subscriber,
        "home/#",
        options(QoS::AtLeastOnce, 1, false),
        None,
    )
    .await;
    assert!(received_topics(&mut subscriber).await.is_empty());
    // 1 on a new filter sends them.
    subscribe_with(
        &mut subscriber,
        "home/+",
        options(QoS::AtMostOnce, 1, false),
        None,
    )
    .await;
    assert_eq!(received_topics(&mut subscriber).await, ["home/lamp"]);
    // 0: on every SUBSCRIBE, even one that replaces a subscription.
    subscribe_with(
        &mut subscriber,
        "home/+",
        options(QoS::AtMostOnce, 0, false),
        None,
    )
    .await;
    assert_eq!(received_topics(&mut subscriber).await, ["home/lamp"]);
}

#[tokio::test]
async fn retained_delivery_uses_lower_qos_and_subscription_id() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "meter").await;
    publish_retained(&mut publisher, "meter/kwh", QoS::ExactlyOnce, b"42").await;
    publish_retained(&mut publisher, "meter/volts", QoS::AtMostOnce, b"230").await;

    let mut subscriber = client(&broker, V5, "display").await;
    subscribe_with(
        &mut subscriber,
        "meter/+",
        options(QoS::AtLeastOnce, 0, false),
        Some(17),
    )
    .await;
    let mut received: Vec<Publish> = Vec::new();
    for _ in 0..2 {
        received.push(subscriber.recv_publish().await);
    }
    received.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(received[0].topic.as_str(), "meter/kwh");
    assert_eq!(received[0].qos, QoS::AtLeastOnce);
    assert_eq!(received[1].qos, QoS::AtMostOnce);
    for publish in &received {
        assert_eq!(publish.properties.subscription_identifiers, [17]);
        assert!(publish.retain);
    }
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_messages() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V5, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;
    let mut worker = client(&broker, V5, "worker").await;
    worker
        .subscribe(1, &[("$share/workers/home/#", QoS::AtLeastOnce)])
        .await;
    assert!(received_topics(&mut worker).await.is_empty());
}

#[tokio::test]
async fn full_store_delivers_without_retaining() {
    let mut settings = InstanceSettings::new("mqtt-test");
    settings.max_retained_messages = 1;
    let broker = TestBroker::start_with(settings, Arc::new(AllowAll)).await;
    let mut current = client(&broker, V5, "current").await;
    current.subscribe(1, &[("home/#", QoS::AtMostOnce)]).await;
    let mut publisher = client(&broker, V5, "publisher").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;
    publish_retained(&mut publisher, "home/door", QoS::AtLeastOnce, b"shut").await;
    assert_eq!(
        received_topics(&mut current).await,
        ["home/door", "home/lamp"]
    );
    assert_eq!(broker.instance.retained_count(), 1);

    let mut later = client(&broker, V5, "later").await;
    later.subscribe(1, &[("home/#", QoS::AtMostOnce)]).await;
    assert_eq!(received_topics(&mut later).await, ["home/lamp"]);
}

#[tokio::test]
async fn point_to_point_messages_are_not_retained() {
    let broker = TestBroker::start().await;
    let mut target = client(&broker, V311, "GID_a@@@target").await;
    let mut publisher = client(&broker, V311, "publisher").await;
    publish_retained(
        &mut publisher,
        "sensors/p2p/GID_a@@@target",
        QoS::AtLeastOnce,
        b"hi",
    )
    .await;
    let publish = target.recv_publish().await;
    assert!(!publish.retain);
    assert_eq!(broker.instance.retained_count(), 0);
}

#[tokio::test]
async fn rumqttc_receives_retained_message() {
    let broker = TestBroker::start().await;
    let mut publisher = client(&broker, V311, "lamp").await;
    publish_retained(&mut publisher, "home/lamp", QoS::AtLeastOnce, b"on").await;

    let mut options =
        rumqttc::v5::MqttOptions::new("rumqttc-panel", "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    client
        .subscribe("home/+", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let publish = tokio::time::timeout(common::WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(
                    publish,
                ))) => return publish,
                Ok(_) => {}
                Err(error) => panic!("rumqttc event loop failed: {error}"),
            }
        }
    })
    .await
    .expect("retained message within 5 s");
    assert_eq!(&publish.topic[..], b"home/lamp");
    assert!(publish.retain);
}
