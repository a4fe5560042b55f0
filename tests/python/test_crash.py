"""Acknowledged QoS 1 and QoS 2 messages survive SIGKILL of the server (short form for CI).

Two subscribers keep persistent sessions on `mqtt-cn-hz01`: one made through the global
endpoint and one on the instance's own listener. Both go offline. Each round, two publishers
send QoS 1 and QoS 2 messages to the subscribers' topics, one connected to the instance's
listener and one through the global endpoint, which routes it to the same instance. The server
is killed with SIGKILL at a random moment and restarted on the same data directory. After the
last round the subscribers come back. Each must receive every message whose publisher saw it
acknowledged: QoS 1 at least once, QoS 2 exactly once.

SWITCHYARD_CRASH_ROUNDS sets the number of rounds (default 3) for a longer run, and
SWITCHYARD_CRASH_SEED the seed of the kill delays (default: the clock, printed by the test).
"""

import collections
import os
import random
import re
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from conftest import GROUP_ID, Server, signature_password

ROUNDS = int(os.environ.get("SWITCHYARD_CRASH_ROUNDS", "3"))
SEED = int(os.environ.get("SWITCHYARD_CRASH_SEED", time.time_ns() % 1_000_000))
# The cap on one publisher's messages of each QoS in one round. A round's kill comes 0.1 to
# 0.6 s after the publishers start, well before they can send this many, so it lands while
# messages are in flight.
MESSAGES_PER_QOS = 1000
PATHS = ("instance", "global")
TOPICS = [("sensors/crash/q1", 1), ("sensors/crash/q2", 2)]
# paho 2.2 reports a received PUBREC only in its log, with this text.
PUBREC_LOG = re.compile(r"Received PUBREC \(Mid: (\d+)\)")


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
    """Connect the persistent subscriber of `path`, and return it with its message counter."""
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


def subscribe_and_leave(server, path):
    """Subscribe the persistent subscriber of `path` to both topics, then disconnect it."""
    subscriber, _ = connect_subscriber(server, path)
    granted = []
    subscribed = threading.Event()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        granted.extend(code.value for code in reason_codes)
        subscribed.set()

    subscriber.on_subscribe = on_subscribe
    subscriber.subscribe(TOPICS)
    assert subscribed.wait(10), f"subscriber through {path} got no SUBACK"
    assert granted == [1, 2], f"subscriber through {path} was granted {granted}"
    subscriber.disconnect()
    subscriber.loop_stop()


def publish_until_killed(server, path, round_number, acknowledged, stop):
    publisher = signed_client(server, f"{GROUP_ID}@@@crash-pub-{path}-{round_number}")
    publisher.max_inflight_messages_set(20)
    # Packet id to payload, and the packet ids the server acknowledged: by PUBACK at QoS 1 and
    # by PUBREC at QoS 2, because the server owns a QoS 2 message once it sends PUBREC. The
    # callbacks run on paho's network thread while it holds paho's own locks, so they take no
    # lock of the test's and only append. Packet ids are not reused, because a publisher sends
    # fewer than 65,535 messages.
    sent = {}
    acknowledged_ids = []

    def on_publish(client, userdata, mid, reason_code, properties):
        if not reason_code.is_failure:
            acknowledged_ids.append(mid)

    def on_log(client, userdata, level, message):
        match = PUBREC_LOG.fullmatch(message)
        if match:
            acknowledged_ids.append(int(match.group(1)))

    publisher.on_publish = on_publish
    publisher.on_log = on_log
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
        acknowledged.update(sent[mid] for mid in acknowledged_ids if mid in sent)


def run_publisher(errors, *args):
    try:
        publish_until_killed(*args)
    except Exception as error:  # reported by run_round, which fails the test
        errors.append(error)


def run_round(server, rng, round_number, acknowledged):
    stop = threading.Event()
    errors = []
    # Daemon threads, so that a publisher stuck on the dead connection cannot keep the test
    # process alive after the test ends.
    publishers = [
        threading.Thread(
            target=run_publisher,
            args=(errors, server, path, round_number, acknowledged, stop),
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
        assert not publisher.is_alive(), f"round {round_number}: a publisher did not stop"
    assert not errors, f"round {round_number}: a publisher failed: {errors!r}"
    server.start()


def test_acknowledged_messages_survive_sigkill(tmp_path):
    # Every message of every round stays queued for both offline subscribers, so no session may
    # drop its oldest message at the queue limit.
    max_queued = len(PATHS) * len(TOPICS) * MESSAGES_PER_QOS * ROUNDS
    server = Server(tmp_path, max_queued_messages=max_queued).start()
    print(f"seed={SEED}")
    rng = random.Random(SEED)
    acknowledged = set()
    received = {}
    try:
        for path in PATHS:
            subscribe_and_leave(server, path)
        for round_number in range(ROUNDS):
            run_round(server, rng, round_number, acknowledged)

        subscribers = []
        for path in PATHS:
            subscriber, received[path] = connect_subscriber(server, path)
            subscribers.append(subscriber)
        deadline = time.monotonic() + 30 + 5 * ROUNDS
        while time.monotonic() < deadline and not all(
            acknowledged <= set(counter) for counter in received.values()
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
        missing = sorted(p for p in acknowledged if counter[p] == 0)
        duplicated_qos2 = sorted(p for p, count in counter.items() if "-q2-" in p and count > 1)
        print(
            f"subscriber session via {session}: received={sum(counter.values())} "
            f"missing={len(missing)} qos2_duplicates={len(duplicated_qos2)}"
        )
        assert not missing, f"{session} session lost {len(missing)} acknowledged messages, e.g. {missing[:5]}"
        assert not duplicated_qos2, f"{session} session got QoS 2 messages twice: {duplicated_qos2[:5]}"
