"""Acknowledged QoS 1 and QoS 2 messages survive SIGKILL of the server (short form for CI).

Two subscribers keep persistent sessions on `mqtt-cn-hz01`: one made through the global
endpoint and one on the instance's own listener. Both go offline. Each round, two publishers
send QoS 1 and QoS 2 messages to the subscribers' topics, one connected to the instance's
listener and one through the global endpoint, which routes it to the same instance. The server
is killed with SIGKILL at a random moment and restarted on the same data directory. After the
last round the subscribers come back. Each must receive every message whose publisher saw it
acknowledged: QoS 1 at least once, QoS 2 exactly once.

SWITCHYARD_CRASH_ROUNDS sets the number of rounds (default 3) for a longer run.
"""

import collections
import os
import random
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from conftest import GROUP_ID, Server, signature_password

ROUNDS = int(os.environ.get("SWITCHYARD_CRASH_ROUNDS", "3"))
# The cap on one publisher's messages of each QoS in one round. A round's kill comes 0.1 to
# 0.6 s after the publishers start, well before they can send this many, so it lands while
# messages are in flight.
MESSAGES_PER_QOS = 1000
PATHS = ("instance", "global")
TOPICS = [("sensors/crash/q1", 1), ("sensors/crash/q2", 2)]


def signed_client(server, client_id):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    key = server.keys.root
    client.username_pw_set(f"Signature|{key[0]}|mqtt-cn-hz01", signature_password(key[1], client_id))
    return client


def address_of(server, path):
    if path == "global":
        return server.global_endpoint()
    return server.instance("mqtt-cn-hz01")


def connect_subscriber(server, path):
    """Connect the persistent subscriber of `path` and return it with its message counter."""
    client = signed_client(server, f"{GROUP_ID}@@@crash-sub-{path}")
    received = collections.Counter()
    client.on_message = lambda c, u, m: received.update([m.payload.decode()])
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(*address_of(server, path), clean_start=False, properties=properties)
    client.loop_start()
    assert connected.wait(10), f"subscriber through {path} did not connect"
    return client, received


def publish_until_killed(server, path, round_number, acknowledged, stop):
    publisher = signed_client(server, f"{GROUP_ID}@@@crash-pub-{path}-{round_number}")
    publisher.max_inflight_messages_set(20)
    # Packet id to payload, and the packet ids the server acknowledged. The callback runs on
    # paho's network thread while it holds paho's own locks, so it takes no lock of the test's
    # and only appends. Packet ids are not reused, because a publisher sends fewer than 65,535
    # messages.
    sent = {}
    acknowledged_ids = []

    def on_publish(client, userdata, mid, reason_code, properties):
        if not reason_code.is_failure:
            acknowledged_ids.append(mid)

    publisher.on_publish = on_publish
    # The killed server's port is gone after the restart, so a reconnect could only fail.
    publisher.reconnect_delay_set(min_delay=30, max_delay=30)
    publisher.connect(*address_of(server, path))
    publisher.loop_start()
    try:
        for i in range(MESSAGES_PER_QOS):
            for topic, qos in TOPICS:
                if stop.is_set():
                    return
                payload = f"{path}-q{qos}-r{round_number}-{i}"
                sent[publisher.publish(topic, payload, qos=qos).mid] = payload
                time.sleep(0.0005)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        acknowledged.extend(sent[mid] for mid in acknowledged_ids if mid in sent)


def run_round(server, rng, round_number, acknowledged):
    stop = threading.Event()
    # Daemon threads, so that a publisher stuck on the dead connection cannot keep the test
    # process alive after the test ends.
    publishers = [
        threading.Thread(
            target=publish_until_killed,
            args=(server, path, round_number, acknowledged, stop),
            daemon=True,
        )
        for path in PATHS
    ]
    for publisher in publishers:
        publisher.start()
    time.sleep(rng.uniform(0.1, 0.6))
    server.kill()
    stop.set()
    for publisher in publishers:
        publisher.join(timeout=30)
    server.start()


def test_acknowledged_messages_survive_sigkill(tmp_path):
    rng = random.Random(20261204)
    # Every message of every round stays queued for both offline subscribers, so no session may
    # drop its oldest message at the queue limit.
    max_queued = len(PATHS) * len(TOPICS) * MESSAGES_PER_QOS * ROUNDS
    server = Server(tmp_path, max_queued_messages=max_queued).start()
    for path in PATHS:
        subscriber, _ = connect_subscriber(server, path)
        subscriber.subscribe(TOPICS)
        time.sleep(0.5)
        subscriber.disconnect()
        subscriber.loop_stop()

    acknowledged = []
    received = {}
    try:
        for round_number in range(ROUNDS):
            run_round(server, rng, round_number, acknowledged)

        subscribers = []
        for path in PATHS:
            subscriber, received[path] = connect_subscriber(server, path)
            subscribers.append(subscriber)
        deadline = time.monotonic() + 30
        expected = set(acknowledged)
        while time.monotonic() < deadline and not all(
            expected <= set(counter) for counter in received.values()
        ):
            time.sleep(0.2)
        time.sleep(1)  # let duplicates, if any, arrive
        for subscriber in subscribers:
            subscriber.disconnect()
            subscriber.loop_stop()
    finally:
        server.stop()

    counts = " ".join(
        f"{path}_q{qos}={sum(1 for p in acknowledged if p.startswith(f'{path}-q{qos}-'))}"
        for path in PATHS
        for qos in (1, 2)
    )
    print(f"rounds={ROUNDS} acknowledged: {counts}")
    assert acknowledged, "the publishers got no acknowledgement before the kills"
    for path in PATHS:
        assert any(p.startswith(f"{path}-") for p in acknowledged), f"no {path} publish was acknowledged"

    for session, counter in received.items():
        missing = [p for p in acknowledged if counter[p] == 0]
        duplicated_qos2 = [p for p in acknowledged if "-q2-" in p and counter[p] > 1]
        print(
            f"subscriber session via {session}: received={sum(counter.values())} "
            f"missing={len(missing)} qos2_duplicates={len(duplicated_qos2)}"
        )
        assert not missing, f"{session} session lost {len(missing)} acknowledged messages, e.g. {missing[:5]}"
        assert not duplicated_qos2, f"{session} session got QoS 2 messages twice: {duplicated_qos2[:5]}"
