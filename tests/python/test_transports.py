"""paho-mqtt devices over TLS, WebSocket and secure WebSocket, on instance listeners and on the
global endpoint, with a CA and server certificate generated for each test."""

import datetime
import ipaddress
import time

import paho.mqtt.client as mqtt
import pytest

# cryptography is installed with aliyun-python-sdk-core from requirements.txt.
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import GROUP_ID, Server


def write_certificates(directory):
    """Write ca.pem, server.pem and server.key for localhost and 127.0.0.1 into directory."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid_from, valid_until = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchyard Python test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_until)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    paths = {name: directory / name for name in ("ca.pem", "server.pem", "server.key")}
    paths["ca.pem"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["server.pem"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["server.key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def transport_server(tmp_path):
    certificates = write_certificates(tmp_path)
    files = f'certificate = "{certificates["server.pem"]}", private_key = "{certificates["server.key"]}"'
    tls = f'{{ protocol = "tls", listen = "127.0.0.1:0", {files} }}'
    ws = '{ protocol = "ws", listen = "127.0.0.1:0" }'
    wss = f'{{ protocol = "wss", listen = "127.0.0.1:0", path = "/secure", {files} }}'
    server = Server(
        tmp_path,
        instance_listeners={"mqtt-cn-hz01": [tls, ws, wss]},
        global_listeners=[tls, ws],
    ).start()
    server.ca_certs = certificates["ca.pem"]
    yield server
    server.stop()


def expect_message(device, topic, payload, timeout=10):
    received = device.messages.get(timeout=timeout)
    assert received == (topic, payload), f"{device.client_id} received {received}"


def test_instance_listeners_carry_messages(transport_server, devices):
    server = transport_server
    topic = "sensors/transports"
    ws = devices(server, f"{GROUP_ID}@@@py-ws", "mqtt-cn-hz01", transport="websockets")
    ws.connect(server.listener("instance", "mqtt-cn-hz01", "ws"), subscribe=[topic])

    wss = devices(
        server,
        f"{GROUP_ID}@@@py-wss",
        "mqtt-cn-hz01",
        transport="websockets",
        ca_certs=server.ca_certs,
    )
    wss.client.ws_set_options(path="/secure")
    wss.connect(server.listener("instance", "mqtt-cn-hz01", "wss"), subscribe=[topic])

    tls = devices(server, f"{GROUP_ID}@@@py-tls", "mqtt-cn-hz01", ca_certs=server.ca_certs)
    tls.connect(server.listener("instance", "mqtt-cn-hz01", "tls"))
    tls.client.publish(topic, b"over tls", qos=1).wait_for_publish(timeout=10)

    expect_message(ws, topic, b"over tls")
    expect_message(wss, topic, b"over tls")


def test_global_endpoint_routes_tls_and_websocket(transport_server, devices):
    server = transport_server
    topic = "sensors/routed"
    tls = devices(server, f"{GROUP_ID}@@@py-global-tls", "mqtt-cn-sh01", ca_certs=server.ca_certs)
    tls.connect(server.listener("global", "global", "tls"), subscribe=[topic])
    ws = devices(server, f"{GROUP_ID}@@@py-global-ws", "mqtt-cn-sh01", transport="websockets")
    ws.connect(server.listener("global", "global", "ws"), subscribe=[topic])

    # Both devices name mqtt-cn-sh01, so a publish on its region listener reaches them.
    publisher = devices(server, f"{GROUP_ID}@@@py-region-pub", "mqtt-cn-sh01")
    publisher.connect(server.instance("mqtt-cn-sh01"))
    publisher.client.publish(topic, b"from sh01", qos=1).wait_for_publish(timeout=10)

    expect_message(tls, topic, b"from sh01")
    expect_message(ws, topic, b"from sh01")


def test_websocket_on_wrong_path_is_refused(transport_server):
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"{GROUP_ID}@@@py-wrong-path",
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    client.ws_set_options(path="/not-mqtt")
    host, port = transport_server.listener("instance", "mqtt-cn-hz01", "ws")
    # paho does not report the HTTP status (404 here), only that the upgrade failed.
    started = time.monotonic()
    with pytest.raises(mqtt.WebsocketConnectionError):
        client.connect(host, port, keepalive=30)
    assert time.monotonic() - started < 10, "the refusal came only after a timeout"
