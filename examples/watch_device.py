#!/usr/bin/env python3
"""Connects one device through the default deployment's global endpoint and shows where it is.

Every two seconds a probe publishes on each instance's own region listener to the device's topic,
and the device prints the name of the instance whose probe reached it, so a DR switch shows up as
the name changing. Stop it with Ctrl-C. Needs `pip install paho-mqtt`, and the default deployment
from `switchyard serve` (run from the same directory, so that ./switchyard-data is found).
"""

import argparse
import base64
import hashlib
import hmac
import pathlib
import time
import tomllib

import paho.mqtt.client as mqtt

INSTANCES = [("mqtt-cn-hz01", 1883), ("mqtt-cn-sh01", 1885)]
GLOBAL_ENDPOINT = 1884


def login(key, client_id, instance_id):
    """Returns the Signature-mode username and password of a device."""
    digest = hmac.new(key["access_key_secret"].encode(), client_id.encode(), hashlib.sha1).digest()
    return f"Signature|{key['access_key_id']}|{instance_id}", base64.b64encode(digest).decode()


def probe(key, instance_id, port, topic):
    client_id = f"GID_demo@@@probe-{instance_id}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id)
    client.username_pw_set(*login(key, client_id, instance_id))
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, instance_id, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="switchyard-data", help="data directory of `switchyard serve`")
    parser.add_argument("--device", default="device-1", help="device id; the client id is GID_demo@@@<device>")
    args = parser.parse_args()

    key_file = pathlib.Path(args.data_dir) / "default-access-key.toml"
    key = tomllib.loads(key_file.read_text())
    client_id = f"GID_demo@@@{args.device}"
    topic = f"sensors/{args.device}"

    device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    device.username_pw_set(*login(key, client_id, "mqtt-cn-hz01"))
    device.reconnect_delay_set(min_delay=1, max_delay=2)
    device.on_connect = lambda c, u, f, rc, p: (print(f"connected: {rc}"), c.subscribe(topic, qos=1))
    device.on_disconnect = lambda c, u, f, rc, p: print(f"disconnected: {rc}")
    device.on_message = lambda c, u, m: print(f"{client_id} is on {m.payload.decode()}")
    device.connect("127.0.0.1", GLOBAL_ENDPOINT)
    device.loop_start()
    try:
        while True:
            time.sleep(2)
            for instance_id, port in INSTANCES:
                probe(key, instance_id, port, topic)
    except KeyboardInterrupt:
        pass
    finally:
        device.disconnect()
        device.loop_stop()


if __name__ == "__main__":
    main()
