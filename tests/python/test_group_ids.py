"""CreateGroupId, DeleteGroupId and ListGroupId through the official SDKs, and their effect on
real MQTT logins: immediately, across a restart, within a DR group, and after a delete."""

import json
import queue
import sqlite3
import subprocess
import time

import paho.mqtt.client as mqtt

from conftest import BINARY, GROUP_ID, Server, signature_password
from sdk import REQUEST_ID, call_group_tea, call_legacy

# The CONNACK reason code of a refused Group ID, 0x85. paho-mqtt 2.2 reports the MQTT 3.1.1
# return code 2 (identifier rejected) as this MQTT 5.0 code too.
CLIENT_ID_NOT_VALID = 0x85


def create(server, instance_id, group_id, key=None, tags=None, **kwargs):
    return call_group_tea(
        server.api(), key or server.keys.root, "CreateGroupId",
        instance_id=instance_id, group_id=group_id, tags=tags, **kwargs,
    )


def delete(server, instance_id, group_id, key=None, **kwargs):
    return call_group_tea(
        server.api(), key or server.keys.root, "DeleteGroupId",
        instance_id=instance_id, group_id=group_id, **kwargs,
    )


def list_group_ids(server, instance_id, key=None, tags=None, **kwargs):
    return call_group_tea(
        server.api(), key or server.keys.root, "ListGroupId",
        instance_id=instance_id, tags=tags, **kwargs,
    )


def listed(server, instance_id):
    """Returns {GroupId: InstanceId} of ListGroupId on `instance_id`."""
    outcome = list_group_ids(server, instance_id)
    assert outcome.status == 200, outcome
    return {item["GroupId"]: item["InstanceId"] for item in outcome.body["Data"]}


def assert_created(outcome):
    assert outcome.status == 200, outcome
    assert set(outcome.body) == {"RequestId"}, outcome.body
    assert REQUEST_ID.match(outcome.body["RequestId"]), outcome.body


def login(server, instance_id, client_id, address=None, protocol=mqtt.MQTTv5):
    """Connects once, without reconnecting, and returns the CONNACK reason code."""
    host, port = address or server.instance(instance_id)
    key_id, secret = server.keys.root
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.username_pw_set(f"Signature|{key_id}|{instance_id}", signature_password(secret, client_id))
    codes = queue.Queue()
    client.on_connect = lambda c, u, flags, reason_code, p: codes.put(reason_code.value)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        return codes.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_create_list_login(server):
    assert login(server, "mqtt-cn-solo", "GID_fresh@@@dev1") == CLIENT_ID_NOT_VALID

    before = int(time.time() * 1000)
    tags = json.dumps([{"key": "team", "value": "fleet"}])
    assert_created(create(server, "mqtt-cn-solo", "GID_fresh", tags=tags))

    outcome = list_group_ids(server, "mqtt-cn-solo")
    assert outcome.status == 200, outcome
    assert REQUEST_ID.match(outcome.body["RequestId"])
    items = {item["GroupId"]: item for item in outcome.body["Data"]}
    assert set(items) == {GROUP_ID, "GID_fresh"}
    fresh = items["GID_fresh"]
    assert fresh["InstanceId"] == "mqtt-cn-solo"
    assert isinstance(fresh["CreateTime"], int)
    assert before <= fresh["CreateTime"] <= int(time.time() * 1000)
    assert fresh["UpdateTime"] == fresh["CreateTime"]
    assert fresh["IndependentNaming"] is True
    assert fresh["Tags"] == [{"TagKey": "team", "TagValue": "fleet"}]
    assert items[GROUP_ID]["Tags"] == []

    assert login(server, "mqtt-cn-solo", "GID_fresh@@@dev1") == 0
    assert login(server, "mqtt-cn-solo", "GID_fresh@@@dev2", protocol=mqtt.MQTTv311) == 0
    # Other instances do not share it.
    assert login(server, "mqtt-cn-hz01", "GID_fresh@@@dev1") == CLIENT_ID_NOT_VALID


def test_list_filters_by_tags(server):
    tagged = json.dumps([{"key": "team", "value": "fleet"}])
    assert_created(create(server, "mqtt-cn-solo", "GID_tagged", tags=tagged))
    assert_created(create(server, "mqtt-cn-solo", "GID_plain"))
    outcome = list_group_ids(server, "mqtt-cn-solo", tags=tagged)
    assert [item["GroupId"] for item in outcome.body["Data"]] == ["GID_tagged"]


def test_group_ids_survive_restart(tmp_path):
    srv = Server(tmp_path).start()
    try:
        assert_created(create(srv, "mqtt-cn-solo", "GID_kept"))
        assert_created(create(srv, "mqtt-cn-solo", "GID_dropped"))
        assert delete(srv, "mqtt-cn-solo", "GID_dropped").status == 200
        created_at = list_group_ids(srv, "mqtt-cn-solo").body["Data"]
        srv.stop()
        srv.start()

        assert listed(srv, "mqtt-cn-solo") == {GROUP_ID: "mqtt-cn-solo", "GID_kept": "mqtt-cn-solo"}
        kept_item = [item for item in list_group_ids(srv, "mqtt-cn-solo").body["Data"] if item["GroupId"] == "GID_kept"]
        assert kept_item == [item for item in created_at if item["GroupId"] == "GID_kept"]
        assert login(srv, "mqtt-cn-solo", "GID_kept@@@dev1") == 0
        assert login(srv, "mqtt-cn-solo", "GID_dropped@@@dev1") == CLIENT_ID_NOT_VALID

        audit = subprocess.run(
            [str(BINARY), "audit", "--config", str(srv.config_path)],
            capture_output=True, text=True, check=True,
        ).stdout
        assert audit.count("CreateGroupId") == 2, audit
        assert "GID_dropped=registered -> GID_dropped=absent" in audit, audit
    finally:
        srv.stop()


def test_delete_refuses_new_logins(server, devices):
    assert_created(create(server, "mqtt-cn-solo", "GID_gone"))
    connected = devices(server, "GID_gone@@@kept", "mqtt-cn-solo").connect(server.instance("mqtt-cn-solo"))

    outcome = delete(server, "mqtt-cn-solo", "GID_gone")
    assert outcome.status == 200, outcome
    assert set(outcome.body) == {"RequestId"}
    assert "GID_gone" not in listed(server, "mqtt-cn-solo")
    assert login(server, "mqtt-cn-solo", "GID_gone@@@dev1") == CLIENT_ID_NOT_VALID
    assert login(server, "mqtt-cn-solo", "GID_gone@@@dev2", protocol=mqtt.MQTTv311) == CLIENT_ID_NOT_VALID

    # A client that logged in before the delete stays connected.
    time.sleep(1)
    assert connected.disconnects.empty()
    assert connected.client.is_connected()


def test_dr_group_members_share_group_ids(server):
    assert_created(create(server, "mqtt-cn-hz01", "GID_shared"))
    assert login(server, "mqtt-cn-sh01", "GID_shared@@@dev1") == 0
    assert login(server, "mqtt-cn-hz01", "GID_shared@@@dev2", address=server.global_endpoint()) == 0
    assert listed(server, "mqtt-cn-sh01")["GID_shared"] == "mqtt-cn-hz01"

    # The record belongs to hz01: deleting it on sh01 names hz01.
    outcome = delete(server, "mqtt-cn-sh01", "GID_shared")
    assert (outcome.status, outcome.code) == (400, "ParameterFieldCheckFailed"), outcome
    assert "InstanceId mqtt-cn-hz01" in outcome.message

    # Created on both members, it stays valid until both have deleted it.
    assert_created(create(server, "mqtt-cn-sh01", "GID_shared"))
    assert listed(server, "mqtt-cn-sh01")["GID_shared"] == "mqtt-cn-sh01"
    assert delete(server, "mqtt-cn-hz01", "GID_shared").status == 200
    assert login(server, "mqtt-cn-hz01", "GID_shared@@@dev3") == 0
    assert delete(server, "mqtt-cn-sh01", "GID_shared").status == 200
    assert login(server, "mqtt-cn-hz01", "GID_shared@@@dev4") == CLIENT_ID_NOT_VALID
    assert login(server, "mqtt-cn-sh01", "GID_shared@@@dev5") == CLIENT_ID_NOT_VALID


def test_configured_group_ids(server):
    assert listed(server, "mqtt-cn-hz01") == {GROUP_ID: "mqtt-cn-hz01"}
    outcome = create(server, "mqtt-cn-hz01", GROUP_ID)
    assert (outcome.status, outcome.code) == (400, "GroupIdAlreadyExsited"), outcome
    outcome = delete(server, "mqtt-cn-hz01", GROUP_ID)
    assert (outcome.status, outcome.code) == (400, "ParameterFieldCheckFailed"), outcome
    assert "configuration file" in outcome.message
    assert login(server, "mqtt-cn-hz01", f"{GROUP_ID}@@@dev1") == 0


def test_classic_signature_through_core_sdk(server):
    for method in ["POST", "GET"]:
        group_id = f"GID_core_{method.lower()}"
        params = {"InstanceId": "mqtt-cn-solo", "GroupId": group_id}
        outcome = call_legacy(server.api(), server.keys.root, "CreateGroupId", params, method)
        assert outcome.status == 200, outcome
        assert REQUEST_ID.match(outcome.body["RequestId"])
        outcome = call_legacy(server.api(), server.keys.root, "ListGroupId", {"InstanceId": "mqtt-cn-solo"}, method)
        assert group_id in [item["GroupId"] for item in outcome.body["Data"]]
        outcome = call_legacy(server.api(), server.keys.root, "DeleteGroupId", params, method)
        assert outcome.status == 200, outcome
        outcome = call_legacy(server.api(), server.keys.root, "DeleteGroupId", params, method)
        assert (outcome.status, outcome.code) == (400, "ParameterFieldCheckFailed"), outcome


def test_classic_signature_through_tea_sdk(server):
    assert_created(create(server, "mqtt-cn-solo", "GID-classic", signature_algorithm="v2"))
    assert "GID-classic" in listed(server, "mqtt-cn-solo")


def test_error_codes(server):
    cases = [
        (create(server, "mqtt-cn-solo", "GID_twice"), 200, None),
        (create(server, "mqtt-cn-solo", "GID_twice"), 400, "GroupIdAlreadyExsited"),
        (create(server, "mqtt-cn-nowhere", "GID_x123"), 400, "InstanceNotFound"),
        (list_group_ids(server, "mqtt-cn-nowhere"), 400, "InstanceNotFound"),
        (delete(server, "mqtt-cn-nowhere", "GID_x123"), 400, "InstanceNotFound"),
        (create(server, "mqtt-cn-other", "GID_x123"), 400, "InstancePermissionCheckFailed"),
        (list_group_ids(server, "mqtt-cn-other"), 400, "InstancePermissionCheckFailed"),
        (create(server, "mqtt-cn-solo", "GID_ab"), 400, "ParameterFieldCheckFailed"),
        (create(server, "mqtt-cn-solo", "gid_lowercase"), 400, "ParameterFieldCheckFailed"),
        (create(server, "mqtt-cn-solo", "GID_" + "a" * 57), 400, "ParameterFieldCheckFailed"),
        (create(server, "mqtt-cn-solo", "GID_a.b.c"), 400, "ParameterFieldCheckFailed"),
        (create(server, "mqtt-cn-solo", None), 400, "MissingGroupId"),
        (create(server, None, "GID_x123"), 400, "MissingInstanceId"),
        (create(server, "mqtt-cn-solo", "GID_x123", tags="team=fleet"), 400, "ParameterFieldCheckFailed"),
        (list_group_ids(server, "mqtt cn"), 400, "ParameterFieldCheckFailed"),
        (delete(server, "mqtt-cn-solo", "GID_never"), 400, "ParameterFieldCheckFailed"),
    ]
    for outcome, status, code in cases:
        assert outcome.status == status, outcome
        assert outcome.code == code, outcome
    # Messages name the rejected value.
    outcome = create(server, "mqtt-cn-solo", "GID_a.b.c")
    assert "GID_a.b.c" in outcome.message, outcome
    assert "GID_ or GID-" in outcome.message, outcome
    outcome = create(server, "mqtt-cn-nowhere", "GID_x123")
    assert "mqtt-cn-nowhere" in outcome.message, outcome
    # The other account's own key may list its instance.
    assert listed_with(server, "mqtt-cn-other", server.keys.other) == {GROUP_ID: "mqtt-cn-other"}
    assert "GID_x123" not in listed(server, "mqtt-cn-solo")


def listed_with(server, instance_id, key):
    outcome = list_group_ids(server, instance_id, key=key)
    assert outcome.status == 200, outcome
    return {item["GroupId"]: item["InstanceId"] for item in outcome.body["Data"]}


def test_ram_policies(server):
    # `operator` may only call the DR actions: an implicit deny.
    outcome = create(server, "mqtt-cn-hz01", "GID_ram1", key=server.keys.operator)
    assert (outcome.status, outcome.code) == (403, "NoPermission"), outcome
    detail = outcome.body["AccessDeniedDetail"]
    assert detail["AuthAction"] == "mq:CreateMqttGroupId"
    assert detail["NoPermissionType"] == "ImplicitDeny"
    outcome = list_group_ids(server, "mqtt-cn-hz01", key=server.keys.operator)
    assert outcome.body["AccessDeniedDetail"]["AuthAction"] == "mq:ListMqttGroupId"

    # `denied` may call mq:* but not mq:DeleteMqttGroupId.
    assert_created(create(server, "mqtt-cn-hz01", "GID_ram2", key=server.keys.denied))
    outcome = delete(server, "mqtt-cn-hz01", "GID_ram2", key=server.keys.denied)
    assert (outcome.status, outcome.code) == (403, "NoPermission"), outcome
    assert outcome.body["AccessDeniedDetail"]["NoPermissionType"] == "ExplicitDeny"
    assert outcome.body["AccessDeniedDetail"]["AuthAction"] == "mq:DeleteMqttGroupId"
    assert "GID_ram2" in listed(server, "mqtt-cn-hz01")
    assert "GID_ram1" not in listed(server, "mqtt-cn-hz01")

    # A malformed parameter is reported before the RAM check.
    outcome = create(server, "mqtt-cn-hz01", "bad", key=server.keys.idle)
    assert outcome.code == "ParameterFieldCheckFailed"
    outcome = create(server, "mqtt-cn-nowhere", "GID_ram3", key=server.keys.idle)
    assert outcome.code == "NoPermission"


def test_failed_store_write_changes_nothing(tmp_path):
    srv = Server(tmp_path, busy_timeout_ms=300).start()
    try:
        assert_created(create(srv, "mqtt-cn-solo", "GID_kept"))
        database = sqlite3.connect(srv.data_dir / "switchyard.db", timeout=1, isolation_level=None)
        database.execute("BEGIN EXCLUSIVE")
        outcome = create(srv, "mqtt-cn-solo", "GID_lost")
        assert (outcome.status, outcome.code) == (500, "InternalError"), outcome
        assert "nothing changed" in outcome.message
        outcome = delete(srv, "mqtt-cn-solo", "GID_kept")
        assert (outcome.status, outcome.code) == (500, "InternalError"), outcome
        database.execute("ROLLBACK")
        database.close()

        assert listed(srv, "mqtt-cn-solo") == {GROUP_ID: "mqtt-cn-solo", "GID_kept": "mqtt-cn-solo"}
        assert login(srv, "mqtt-cn-solo", "GID_lost@@@dev1") == CLIENT_ID_NOT_VALID
        assert login(srv, "mqtt-cn-solo", "GID_kept@@@dev1") == 0
        # The store works again once the lock is gone.
        assert_created(create(srv, "mqtt-cn-solo", "GID_lost"))
    finally:
        srv.stop()
