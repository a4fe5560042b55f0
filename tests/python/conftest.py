"""Fixtures that run the real `switchyard` binary on loopback ports chosen by the kernel."""

import base64
import hashlib
import hmac
import os
import pathlib
import queue
import secrets
import signal
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("SWITCHYARD_BIN", REPO / "target" / "debug" / "switchyard"))

ACCOUNT = "1000000000000001"
OTHER_ACCOUNT = "1000000000000002"
GROUP_ID = "GID_demo"


def random_key(prefix):
    return prefix + secrets.token_hex(8), secrets.token_urlsafe(24)


class Keys:
    """AccessKeys of the test deployment, new for every server."""

    def __init__(self):
        self.root = random_key("LTAIroot")
        self.operator = random_key("LTAIoper")
        self.denied = random_key("LTAIdeny")
        self.idle = random_key("LTAIidle")
        self.other = random_key("LTAIothr")


def render_config(
    data_dir,
    keys,
    throttle_rate=1000,
    throttle_burst=1000,
    busy_timeout_ms=5000,
    instance_listeners=None,
    global_listeners=(),
    max_queued_messages=None,
):
    """Render the test deployment's TOML.

    Every instance and the global endpoint get a TCP listener on a free port. instance_listeners
    maps an instance id to further listeners and global_listeners adds listeners to the group,
    each an inline TOML table such as '{ protocol = "ws", listen = "127.0.0.1:0" }'.
    max_queued_messages, when given, raises every instance's queue limit per session and the
    message store's to that many messages.
    """
    instance_listeners = instance_listeners or {}
    queue_limit = "" if max_queued_messages is None else f"max_queued_messages = {max_queued_messages}"
    store_queue_limit = (
        "" if max_queued_messages is None else f"max_queued_messages_per_session = {max_queued_messages}"
    )

    def key(pair):
        return f'{{ id = "{pair[0]}", secret = "{pair[1]}" }}'

    def listeners(extra):
        return ", ".join(['{ protocol = "tcp", listen = "127.0.0.1:0" }', *extra])

    def instance(instance_id, region, edition="platinum", dr=True, account=ACCOUNT):
        return f"""
[[instances]]
id = "{instance_id}"
account = "{account}"
region = "{region}"
edition = "{edition}"
disaster_recovery = {"true" if dr else "false"}
group_ids = ["{GROUP_ID}"]
parent_topics = ["sensors"]
listeners = [{listeners(instance_listeners.get(instance_id, ()))}]
{queue_limit}
"""

    return f"""
data_dir = "{data_dir}"

[api]
listen = "127.0.0.1:0"
throttle_rate_per_second = {throttle_rate}
throttle_burst = {throttle_burst}

[store]
busy_timeout_ms = {busy_timeout_ms}
{store_queue_limit}

[[accounts]]
id = "{ACCOUNT}"
access_keys = [{key(keys.root)}]

[[accounts.ram_users]]
name = "operator"
access_keys = [{key(keys.operator)}]
policies = [{{ effect = "Allow", actions = ["mq:DisasterDowngrade", "mq:DisasterRecovery"], resources = ["acs:mq:*:*:mqtt-cn-hz01"] }}]

[[accounts.ram_users]]
name = "denied"
access_keys = [{key(keys.denied)}]
policies = [
  {{ effect = "Allow", actions = ["mq:*"], resources = ["*"] }},
  {{ effect = "Deny", actions = ["mq:DisasterDowngrade"], resources = ["*"] }},
  {{ effect = "Deny", actions = ["mq:DeleteMqttGroupId"], resources = ["*"] }},
]

[[accounts.ram_users]]
name = "idle"
access_keys = [{key(keys.idle)}]

[[accounts]]
id = "{OTHER_ACCOUNT}"
access_keys = [{key(keys.other)}]
{instance("mqtt-cn-hz01", "cn-hangzhou")}
{instance("mqtt-cn-sh01", "cn-shanghai")}
{instance("mqtt-cn-bj01", "cn-beijing", edition="basic", dr=False)}
{instance("mqtt-cn-solo", "cn-shenzhen")}
{instance("mqtt-cn-other", "cn-hangzhou", account=OTHER_ACCOUNT)}

[[disaster_recovery_groups]]
id = "global"
instances = ["mqtt-cn-hz01", "mqtt-cn-sh01"]
listeners = [{listeners(global_listeners)}]
disconnect_rate_per_second = 200
"""


class Server:
    """A `switchyard serve --config` process and the addresses it printed."""

    def __init__(self, directory, **options):
        self.directory = pathlib.Path(directory)
        self.keys = Keys()
        self.options = options
        self.config_path = self.directory / "switchyard.toml"
        self.data_dir = self.directory / "data"
        self.config_path.write_text(render_config(self.data_dir, self.keys, **options))
        self.process = None
        self.endpoints = {}
        self.listeners = {}

    def start(self, timeout=60):
        log = open(self.directory / "server.log", "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        lines = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        self.endpoints = {}
        self.listeners = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise RuntimeError(f"server did not print 'ready' within {timeout} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"server exited early, see {self.directory / 'server.log'}")
            if line.startswith("endpoint "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                host, port = fields["addr"].rsplit(":", 1)
                address = (host, int(port))
                # The first listener of an owner is its TCP one; instance() and
                # global_endpoint() return it.
                self.endpoints.setdefault((fields["kind"], fields["owner"]), address)
                self.listeners[(fields["kind"], fields["owner"], fields["protocol"])] = address
            if line.strip() == "ready":
                return self

    def _pump(self, lines):
        for line in self.process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def api(self):
        host, port = self.endpoints[("api", "onsmqtt")]
        return f"{host}:{port}"

    def instance(self, instance_id):
        return self.endpoints[("instance", instance_id)]

    def global_endpoint(self, group="global"):
        return self.endpoints[("global", group)]

    def listener(self, kind, owner, protocol):
        """Return the address of the `protocol` listener of an instance or group."""
        return self.listeners[(kind, owner, protocol)]

    def stop(self, timeout=20):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.process.returncode if self.process else None

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path).start()
    yield srv
    srv.stop()


def signature_password(secret, client_id):
    digest = hmac.new(secret.encode(), client_id.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class Device:
    """A paho-mqtt device with Signature-mode credentials that reconnects by itself."""

    def __init__(
        self,
        server,
        client_id,
        instance_id,
        protocol=mqtt.MQTTv5,
        key=None,
        transport="tcp",
        ca_certs=None,
    ):
        self.client_id = client_id
        self.key = key or server.keys.root
        self.messages = queue.Queue()
        self.connects = queue.Queue()
        self.disconnects = queue.Queue()
        self.subscriptions = []
        self.protocol = protocol
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,
        )
        if ca_certs is not None:
            self.client.tls_set(ca_certs=str(ca_certs))
        self.client.username_pw_set(
            f"Signature|{self.key[0]}|{instance_id}", signature_password(self.key[1], client_id)
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connects.put(reason_code.value)
        if not reason_code.is_failure:
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put(reason_code.value)

    def connect(self, address, subscribe=(), timeout=10):
        self.subscriptions = list(subscribe)
        self.client.connect(address[0], address[1], keepalive=30)
        self.client.loop_start()
        code = self.connects.get(timeout=timeout)
        assert code == 0, f"{self.client_id}: CONNACK reason {code}"
        time.sleep(0.2)  # let SUBACK arrive before publishes are sent
        return self

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices():
    opened = []

    def open_device(*args, **kwargs):
        device = Device(*args, **kwargs)
        opened.append(device)
        return device

    yield open_device
    for device in opened:
        try:
            device.close()
        except Exception:  # a device already closed by the test
            pass


def wait_for(predicate, timeout=15, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
