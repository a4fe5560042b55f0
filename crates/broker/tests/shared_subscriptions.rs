//! Shared subscriptions `$share/<group>/<filter>` over the wire: one member per message in
//! round robin, offline members, members that leave, and filter validation.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{RawClient, TestBroker, connect_packet, wait_until};
use switchyard_codec::{
    Ack, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions,
};

const QUIET: Duration = Duration::from_millis(300);
const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const SHARE: &str = "$share/workers/jobs/#";

/// Builds a 5.0 CONNECT whose session lasts `session_expiry` seconds offline and which accepts
/// `receive_maximum` unacknowledged QoS 1 and QoS 2 messages.
fn member_connect(id: &str, session_expiry: u32, receive_maximum: u16) -> Connect {
    let mut connect = connect_packet(V5, id, false);
    connect.properties.session_expiry_interval = Some(session_expiry);
    connect.properties.receive_maximum = Some(receive_maximum);
    connect
}

async fn member(broker: &TestBroker, connect: Connect, qos: QoS) -> RawClient {
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect).await;
    let codes = client.subscribe(1, &[(SHARE, qos)]).await;
    assert_eq!(codes, [ReasonCode(qos as u8)]);
    client
}

async fn publisher(broker: &TestBroker) -> RawClient {
    RawClient::connect_ok(broker.addr, connect_packet(V5, "publisher", true))
        .await
        .0
}

/// Publishes `count` messages `jobs/0`, `jobs/1`, ... at `qos` and completes each exchange.
async fn publish_jobs(publisher: &mut RawClient, count: u16, qos: QoS) {
    for index in 0..count {
        let topic = format!("jobs/{index}");
        publisher.publish(&topic, qos, index + 1, b"job").await;
    }
}

/// Reads PUBLISH packets until none arrives for a while, acknowledging QoS 1 ones when `ack`.
async fn drain(client: &mut RawClient, ack: bool) -> Vec<Publish> {
    let mut received = Vec::new();
    while let Some(packet) = client.try_recv(QUIET).await {
        let Packet::Publish(publish) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        if ack && let Some(id) = publish.packet_id {
            client.send(&Packet::PubAck(Ack::new(id))).await;
        }
        received.push(publish);
    }
    received
}

fn topics(publishes: &[Publish]) -> Vec<String> {
    let mut topics: Vec<String> = publishes
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect();
    topics.sort();
    topics
}

#[tokio::test]
async fn online_members_take_turns() {
    let broker = TestBroker::start().await;
    let mut first = member(&broker, member_connect("w1", 0, 10), QoS::AtLeastOnce).await;
    let mut second = member(&broker, member_connect("w2", 0, 10), QoS::AtLeastOnce).await;
    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 6, QoS::AtLeastOnce).await;

    let first_topics = topics(&drain(&mut first, true).await);
    let second_topics = topics(&drain(&mut second, true).await);
    assert_eq!(first_topics, ["jobs/0", "jobs/2", "jobs/4"]);
    assert_eq!(second_topics, ["jobs/1", "jobs/3", "jobs/5"]);
}

#[tokio::test]
async fn groups_and_plain_subscriptions_each_get_a_copy() {
    let broker = TestBroker::start().await;
    let mut worker = member(&broker, member_connect("w1", 0, 10), QoS::AtLeastOnce).await;
    let (mut auditor, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "auditor", true)).await;
    auditor
        .subscribe(
            1,
            &[
                ("$share/audit/jobs/#", QoS::AtMostOnce),
                ("jobs/+", QoS::AtMostOnce),
            ],
        )
        .await;
    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 1, QoS::AtLeastOnce).await;

    assert_eq!(topics(&drain(&mut worker, true).await), ["jobs/0"]);
    // One copy for the audit group, one for the plain subscription.
    assert_eq!(
        topics(&drain(&mut auditor, false).await),
        ["jobs/0", "jobs/0"]
    );
}

#[tokio::test]
async fn member_qos_and_subscription_id_are_respected() {
    let broker = TestBroker::start().await;
    let (mut client, _) = RawClient::connect_ok(broker.addr, connect_packet(V5, "w1", true)).await;
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: SHARE.into(),
            options: SubscriptionOptions::with_qos(QoS::AtMostOnce),
        }],
        properties: Properties {
            subscription_identifiers: vec![5],
            ..Properties::default()
        },
    };
    client.send(&Packet::Subscribe(subscribe)).await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 1, QoS::ExactlyOnce).await;

    let publish = client.recv_publish().await;
    assert_eq!(publish.qos, QoS::AtMostOnce);
    assert_eq!(publish.properties.subscription_identifiers, [5]);
}

#[tokio::test]
async fn offline_member_is_skipped_while_another_is_online() {
    let broker = TestBroker::start().await;
    let away = member(&broker, member_connect("away", 3600, 10), QoS::AtLeastOnce).await;
    let mut online = member(&broker, member_connect("online", 0, 10), QoS::AtLeastOnce).await;
    drop(away);
    let instance = &broker.instance;
    wait_until("the member is offline", || !instance.is_connected("away")).await;

    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 4, QoS::AtLeastOnce).await;
    assert_eq!(drain(&mut online, true).await.len(), 4);

    let (mut back, connack) =
        RawClient::connect_ok(broker.addr, member_connect("away", 3600, 10)).await;
    assert!(connack.session_present);
    assert!(drain(&mut back, true).await.is_empty());
}

#[tokio::test]
async fn offline_members_queue_when_nobody_is_online() {
    let broker = TestBroker::start().await;
    let first = member(&broker, member_connect("first", 3600, 10), QoS::AtLeastOnce).await;
    let second = member(
        &broker,
        member_connect("second", 3600, 10),
        QoS::AtLeastOnce,
    )
    .await;
    drop(first);
    drop(second);
    let instance = &broker.instance;
    wait_until("both members are offline", || {
        !instance.is_connected("first") && !instance.is_connected("second")
    })
    .await;

    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 4, QoS::AtLeastOnce).await;
    let (mut first, _) =
        RawClient::connect_ok(broker.addr, member_connect("first", 3600, 10)).await;
    let (mut second, _) =
        RawClient::connect_ok(broker.addr, member_connect("second", 3600, 10)).await;
    let mut all = topics(&drain(&mut first, true).await);
    all.extend(topics(&drain(&mut second, true).await));
    all.sort();
    assert_eq!(all, ["jobs/0", "jobs/1", "jobs/2", "jobs/3"]);
}

/// Two members: "slow" accepts one unacknowledged message and never acknowledges, "fast"
/// acknowledges everything. Four QoS `qos` jobs alternate between them, so "slow" has
/// `jobs/0` in flight and `jobs/2` queued.
async fn slow_and_fast(broker: &TestBroker, slow_expiry: u32, qos: QoS) -> (RawClient, RawClient) {
    let mut slow = member(broker, member_connect("slow", slow_expiry, 1), qos).await;
    let mut fast = member(broker, member_connect("fast", 0, 10), qos).await;
    let mut publisher = publisher(broker).await;
    publish_jobs(&mut publisher, 4, qos).await;
    assert_eq!(topics(&drain(&mut slow, false).await), ["jobs/0"]);
    assert_eq!(topics(&drain(&mut fast, true).await), ["jobs/1", "jobs/3"]);
    (slow, fast)
}

#[tokio::test]
async fn unsubscribing_member_hands_over_queued_messages() {
    let broker = TestBroker::start().await;
    let (mut slow, mut fast) = slow_and_fast(&broker, 0, QoS::AtLeastOnce).await;
    let unsubscribe = switchyard_codec::Unsubscribe {
        packet_id: 8,
        filters: vec![SHARE.into()],
        properties: Properties::default(),
    };
    slow.send(&Packet::Unsubscribe(unsubscribe)).await;
    let reply = slow.recv().await;
    assert!(matches!(reply, Some(Packet::UnsubAck(_))), "{reply:?}");
    // The message already sent stays with the member that has it.
    assert_eq!(topics(&drain(&mut fast, true).await), ["jobs/2"]);
    slow.send(&Packet::PubAck(Ack::new(1))).await;
    slow.ping().await;
}

#[tokio::test]
async fn ending_member_hands_over_unacknowledged_qos1() {
    let broker = TestBroker::start().await;
    let (slow, mut fast) = slow_and_fast(&broker, 0, QoS::AtLeastOnce).await;
    drop(slow);
    assert_eq!(topics(&drain(&mut fast, true).await), ["jobs/0", "jobs/2"]);
}

#[tokio::test]
async fn ending_member_keeps_qos2_in_flight() {
    let broker = TestBroker::start().await;
    let (slow, mut fast) = slow_and_fast(&broker, 0, QoS::ExactlyOnce).await;
    drop(slow);
    // jobs/2 was only queued, so it moves. jobs/0 was sent at QoS 2, so no other member gets it.
    let received = drain(&mut fast, false).await;
    assert_eq!(topics(&received), ["jobs/2"]);
}

#[tokio::test]
async fn member_gone_offline_keeps_its_messages() {
    let broker = TestBroker::start().await;
    let (slow, mut fast) = slow_and_fast(&broker, 3600, QoS::AtLeastOnce).await;
    drop(slow);
    let instance = &broker.instance;
    wait_until("the member is offline", || !instance.is_connected("slow")).await;
    assert!(drain(&mut fast, true).await.is_empty());

    let (mut slow, connack) =
        RawClient::connect_ok(broker.addr, member_connect("slow", 3600, 10)).await;
    assert!(connack.session_present);
    let received = drain(&mut slow, true).await;
    assert_eq!(topics(&received), ["jobs/0", "jobs/2"]);
}

#[tokio::test]
async fn invalid_shared_filters_are_refused() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "sloppy", true)).await;
    let filters = [
        ("$share/group", QoS::AtMostOnce),
        ("$share//jobs", QoS::AtMostOnce),
        ("$share/gr+oup/jobs", QoS::AtMostOnce),
        ("$share/group/jobs/#/x", QoS::AtMostOnce),
        ("$share/group/jobs", QoS::AtMostOnce),
    ];
    let codes = client.subscribe(1, &filters).await;
    let invalid = ReasonCode::TOPIC_FILTER_INVALID;
    assert_eq!(
        codes,
        [
            invalid,
            invalid,
            invalid,
            invalid,
            ReasonCode::GRANTED_QOS_0
        ]
    );
}

#[tokio::test]
async fn no_local_on_shared_subscription_is_protocol_error() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "loner", true)).await;
    let mut options = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    options.no_local = true;
    let subscribe = Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: SHARE.into(),
            options,
        }],
        properties: Properties::default(),
    };
    client.send(&Packet::Subscribe(subscribe)).await;
    let packets = client.expect_closed().await;
    let [Packet::Disconnect(disconnect)] = packets.as_slice() else {
        panic!("expected one DISCONNECT, got {packets:?}");
    };
    assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR);
}

#[tokio::test]
async fn unauthorized_shared_filter_is_refused() {
    let broker = TestBroker::start().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet(V5, "nosy", true)).await;
    let codes = client
        .subscribe(1, &[("$share/g/forbidden/#", QoS::AtMostOnce)])
        .await;
    assert_eq!(codes, [ReasonCode::NOT_AUTHORIZED]);
}

#[tokio::test]
async fn v311_clients_can_share() {
    let broker = TestBroker::start().await;
    let mut members = Vec::new();
    for id in ["old-1", "old-2"] {
        let (mut client, _) =
            RawClient::connect_ok(broker.addr, connect_packet(V311, id, true)).await;
        let codes = client.subscribe(1, &[(SHARE, QoS::AtLeastOnce)]).await;
        assert_eq!(codes, [ReasonCode::GRANTED_QOS_1]);
        members.push(client);
    }
    let mut publisher = publisher(&broker).await;
    publish_jobs(&mut publisher, 4, QoS::AtLeastOnce).await;
    let mut counts = HashMap::new();
    for (index, member) in members.iter_mut().enumerate() {
        counts.insert(index, drain(member, true).await.len());
    }
    assert_eq!(counts[&0], 2);
    assert_eq!(counts[&1], 2);
}

#[tokio::test]
async fn session_end_leaves_the_group() {
    let broker = TestBroker::start().await;
    let member = member(&broker, member_connect("short", 0, 10), QoS::AtLeastOnce).await;
    assert_eq!(broker.instance.subscription_count(), 1);
    drop(member);
    let instance = &broker.instance;
    wait_until("the group is empty", || instance.subscription_count() == 0).await;
}
