"""Devices through the global endpoint move between members on DisasterDowngrade and back."""

import queue
import subprocess
import time

import paho.mqtt.client as mqtt

from conftest import BINARY, GROUP_ID, Server, wait_for
from sdk import call_tea

USE_ANOTHER_SERVER = 0x9C


def dr_call(server, action, target, key=None):
    outcome = call_tea(server.api(), key or server.keys.root, action, target, target)
    assert outcome.status == 200, outcome
    return outcome.body["RequestId"]


def lands_on(server, devices, device, instance_id, tag):
    """Reports whether `device` receives a message published on `instance_id`'s region listener."""
    publisher = devices(server, f"{GROUP_ID}@@@pub-{tag}-{time.monotonic_ns()}", instance_id)
    publisher.connect(server.instance(instance_id))
    topic = f"sensors/dr/{device.client_id.split('@@@')[1]}"
    publisher.client.publish(topic, f"probe-{tag}".encode(), qos=1).wait_for_publish(5)
    try:
        while True:
            received_topic, payload = device.messages.get(timeout=3)
            if payload == f"probe-{tag}".encode():
                return True
    except queue.Empty:
        return False
    finally:
        publisher.close()


def test_downgrade_moves_global_devices_only(server, devices):
    global_address = server.global_endpoint()
    v5 = devices(server, f"{GROUP_ID}@@@dev-v5", "mqtt-cn-hz01", protocol=mqtt.MQTTv5)
    v311 = devices(server, f"{GROUP_ID}@@@dev-v311", "mqtt-cn-hz01", protocol=mqtt.MQTTv311)
    regional = devices(server, f"{GROUP_ID}@@@dev-region", "mqtt-cn-hz01")
    for device in (v5, v311):
        device.connect(global_address, subscribe=[f"sensors/dr/{device.client_id.split('@@@')[1]}"])
    regional.connect(server.instance("mqtt-cn-hz01"), subscribe=["sensors/dr/dev-region"])

    # Before the switch the devices that name hz01 are on hz01.
    assert lands_on(server, devices, v5, "mqtt-cn-hz01", "before")
    assert lands_on(server, devices, v311, "mqtt-cn-hz01", "before")

    dr_call(server, "DisasterDowngrade", "mqtt-cn-hz01")

    assert v5.disconnects.get(timeout=10) == USE_ANOTHER_SERVER
    v311.disconnects.get(timeout=10)
    for device in (v5, v311):
        assert device.connects.get(timeout=15) == 0, device.client_id
    time.sleep(0.3)
    assert lands_on(server, devices, v5, "mqtt-cn-sh01", "after")
    assert lands_on(server, devices, v311, "mqtt-cn-sh01", "after")

    # The device on hz01's own region endpoint was not touched.
    assert regional.disconnects.empty()
    assert lands_on(server, devices, regional, "mqtt-cn-hz01", "region")

    # Recovery is graceful: moved devices stay where they are, new ones go to hz01 again.
    dr_call(server, "DisasterRecovery", "mqtt-cn-hz01")
    time.sleep(1)
    assert v5.disconnects.empty()
    assert lands_on(server, devices, v5, "mqtt-cn-sh01", "graceful")
    fresh = devices(server, f"{GROUP_ID}@@@dev-fresh", "mqtt-cn-hz01")
    fresh.connect(global_address, subscribe=["sensors/dr/dev-fresh"])
    assert lands_on(server, devices, fresh, "mqtt-cn-hz01", "fresh")


def test_fallback_for_device_naming_downgraded_member(server, devices):
    dr_call(server, "DisasterDowngrade", "mqtt-cn-sh01")
    device = devices(server, f"{GROUP_ID}@@@dev-named-sh", "mqtt-cn-sh01")
    device.connect(server.global_endpoint(), subscribe=["sensors/dr/dev-named-sh"])
    # sh01's credentials are accepted on hz01, its group peer.
    assert lands_on(server, devices, device, "mqtt-cn-hz01", "fallback")


def test_downgrade_survives_restart(tmp_path, devices):
    srv = Server(tmp_path).start()
    try:
        request_id = dr_call(srv, "DisasterDowngrade", "mqtt-cn-hz01")
        assert srv.stop() == 0
        srv.start()
        device = devices(srv, f"{GROUP_ID}@@@dev-restart", "mqtt-cn-hz01")
        device.connect(srv.global_endpoint(), subscribe=["sensors/dr/dev-restart"])
        assert lands_on(srv, devices, device, "mqtt-cn-sh01", "restart")

        audit = subprocess.run(
            [str(BINARY), "audit", "--config", str(srv.config_path)],
            capture_output=True, text=True, check=True,
        ).stdout
        assert request_id in audit
        assert "global_access=on" in audit and "global_access=off" in audit
        assert srv.keys.root[0] in audit
        assert srv.keys.root[1] not in audit
    finally:
        srv.stop()


def test_sigterm_disconnects_devices_and_exits_cleanly(tmp_path, devices):
    srv = Server(tmp_path).start()
    device = devices(srv, f"{GROUP_ID}@@@dev-stop", "mqtt-cn-hz01")
    device.connect(srv.global_endpoint())
    assert srv.stop() == 0
    wait_for(lambda: not device.disconnects.empty(), what="the device to see the server close")


def test_persistent_session_follows_device_through_downgrade(server, devices):
    """QoS 1 messages acknowledged on hz01 while the device is away reach it on sh01."""
    device = devices(server, f"{GROUP_ID}@@@dev-session", "mqtt-cn-hz01")
    # Long enough for the publisher below to get its PUBACKs before the device is back.
    device.client.reconnect_delay_set(min_delay=3, max_delay=3)
    session_present = queue.Queue()

    def on_connect(client, userdata, flags, reason_code, properties):
        session_present.put(flags.session_present)
        device._on_connect(client, userdata, flags, reason_code, properties)

    device.client.on_connect = on_connect
    properties = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    host, port = server.global_endpoint()
    device.client.connect(host, port, keepalive=30, clean_start=False, properties=properties)
    device.client.loop_start()
    assert device.connects.get(timeout=10) == 0
    assert session_present.get(timeout=1) is False
    topic = "sensors/dr/dev-session"
    device.client.subscribe(topic, qos=1)
    time.sleep(0.3)
    assert lands_on(server, devices, device, "mqtt-cn-hz01", "before")

    publisher = devices(server, f"{GROUP_ID}@@@pub-session", "mqtt-cn-hz01")
    publisher.connect(server.instance("mqtt-cn-hz01"))
    dr_call(server, "DisasterDowngrade", "mqtt-cn-hz01")
    assert device.disconnects.get(timeout=10) == USE_ANOTHER_SERVER
    for payload in (b"offline-1", b"offline-2"):
        publisher.client.publish(topic, payload, qos=1).wait_for_publish(5)

    assert device.connects.get(timeout=15) == 0
    assert session_present.get(timeout=1) is True, "the session moved to sh01"
    received = [device.messages.get(timeout=5)[1] for _ in range(2)]
    assert received == [b"offline-1", b"offline-2"]
    assert lands_on(server, devices, device, "mqtt-cn-sh01", "after")
