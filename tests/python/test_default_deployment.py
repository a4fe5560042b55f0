"""`switchyard serve` with no configuration file: the embedded default deployment."""

import os
import queue
import re
import signal
import socket
import stat
import subprocess
import threading
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import BINARY, REPO, signature_password
from sdk import call_tea

DEFAULT_PORTS = (1883, 1884, 1885, 18080)


def ports_free():
    for port in DEFAULT_PORTS:
        with socket.socket() as probe:
            # The server binds with SO_REUSEADDR, so connections in TIME_WAIT on a default port
            # do not stop it, and must not make the probe report the port as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def start_default(data_dir):
    process = subprocess.Popen(
        [str(BINARY), "serve", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines = queue.Queue()

    def pump():
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    printed = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        assert line is not None, "server exited before it was ready"
        printed.append(line)
        if line == "ready":
            return process, "\n".join(printed)
    process.kill()
    raise AssertionError("default deployment did not print 'ready'")


def stop(process):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


@pytest.mark.skipif(not ports_free(), reason="a default port (1883, 1884, 1885, 18080) is in use")
def test_default_deployment(tmp_path):
    data_dir = tmp_path / "data"
    process, printed = start_default(data_dir)
    try:
        for line in [
            "endpoint kind=instance owner=mqtt-cn-hz01 protocol=tcp addr=127.0.0.1:1883",
            "endpoint kind=instance owner=mqtt-cn-sh01 protocol=tcp addr=127.0.0.1:1885",
            "endpoint kind=global owner=global protocol=tcp addr=127.0.0.1:1884",
            "endpoint kind=api owner=onsmqtt protocol=http addr=127.0.0.1:18080",
        ]:
            assert line in printed
        key_id = re.search(r"AccessKeyId:\s+(\S+)", printed).group(1)
        secret = re.search(r"AccessKeySecret:\s+(\S+)", printed).group(1)

        key_file = data_dir / "default-access-key.toml"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert secret in key_file.read_text()

        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "GID_demo@@@first", protocol=mqtt.MQTTv5)
        device.username_pw_set(f"Signature|{key_id}|mqtt-cn-hz01", signature_password(secret, "GID_demo@@@first"))
        connected = queue.Queue()
        device.on_connect = lambda c, u, f, rc, p: connected.put(rc.value)
        device.connect("127.0.0.1", 1884)
        device.loop_start()
        assert connected.get(timeout=10) == 0
        device.disconnect()
        device.loop_stop()

        outcome = call_tea("127.0.0.1:18080", (key_id, secret), "DisasterDowngrade", "mqtt-cn-hz01", "mqtt-cn-hz01")
        assert outcome.status == 200, outcome
        outcome = call_tea("127.0.0.1:18080", (key_id, secret), "DisasterRecovery", "mqtt-cn-hz01", "mqtt-cn-hz01")
        assert outcome.status == 200, outcome

        password = subprocess.run(
            [str(BINARY), "password", "--client-id", "GID_demo@@@first", "--data-dir", str(data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"username: Signature|{key_id}|mqtt-cn-hz01" in password
        assert signature_password(secret, "GID_demo@@@first") in password
    finally:
        stop(process)

    # The key is generated once and kept.
    process, printed_again = start_default(data_dir)
    stop(process)
    assert key_id in printed_again


@pytest.mark.skipif(not ports_free(), reason="a default port (1883, 1884, 1885, 18080) is in use")
def test_readme_scenario(tmp_path):
    """The README's walk-through: the example device moves on downgrade and stays on recovery."""
    data_dir = tmp_path / "data"
    process, _ = start_default(data_dir)
    examples = REPO / "examples"
    watcher = subprocess.Popen(
        [sys.executable, "-u", str(examples / "watch_device.py"), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = queue.Queue()
    threading.Thread(target=lambda: [output.put(line.strip()) for line in watcher.stdout], daemon=True).start()

    def wait_for_line(expected, timeout=20):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = output.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(line)
            if line == expected:
                return seen
        raise AssertionError(f"watcher never printed {expected!r}; it printed {seen}")

    def dr(action):
        result = subprocess.run(
            [sys.executable, str(examples / "dr.py"), action, "mqtt-cn-hz01", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "'Success': True" in result.stdout, result.stdout

    try:
        wait_for_line("GID_demo@@@device-1 is on mqtt-cn-hz01")
        dr("downgrade")
        seen = wait_for_line("GID_demo@@@device-1 is on mqtt-cn-sh01")
        assert "disconnected: Use another server" in seen, seen
        dr("recover")
        time.sleep(3)
        wait_for_line("GID_demo@@@device-1 is on mqtt-cn-sh01")
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=10)
        stop(process)

