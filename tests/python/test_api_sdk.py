"""DisasterDowngrade and DisasterRecovery through the official SDKs: answers and error codes."""

import sqlite3
import subprocess

import pytest

from conftest import BINARY, Server
from sdk import REQUEST_ID, call_legacy, call_tea


def downgrade(server, instance_id, target_id, key=None, **kwargs):
    return call_tea(server.api(), key or server.keys.root, "DisasterDowngrade", instance_id, target_id, **kwargs)


def recover(server, instance_id, target_id, key=None, **kwargs):
    return call_tea(server.api(), key or server.keys.root, "DisasterRecovery", instance_id, target_id, **kwargs)


def assert_success(outcome):
    assert outcome.status == 200, outcome
    assert outcome.body["Code"] == 200
    assert isinstance(outcome.body["Code"], int)
    assert outcome.body["Success"] is True
    assert outcome.body["Message"] == "operation success."
    assert REQUEST_ID.match(outcome.body["RequestId"]), outcome.body["RequestId"]
    assert "AccessDeniedDetail" not in outcome.body or outcome.body["AccessDeniedDetail"] is None


def test_downgrade_and_recovery_acs3(server):
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))
    assert_success(recover(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))


def test_downgrade_classic_signature_tea_sdk(server):
    assert_success(downgrade(server, "mqtt-cn-sh01", "mqtt-cn-hz01", signature_algorithm="v2"))
    assert_success(recover(server, "mqtt-cn-sh01", "mqtt-cn-hz01", signature_algorithm="v2"))


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_downgrade_classic_signature_core_sdk(server, method):
    params = {"InstanceId": "mqtt-cn-hz01", "DowngradeInstanceId": "mqtt-cn-sh01"}
    outcome = call_legacy(server.api(), server.keys.root, "DisasterDowngrade", params, method)
    assert outcome.status == 200, outcome
    assert outcome.body["Success"] is True
    assert outcome.body["Code"] == 200
    assert REQUEST_ID.match(outcome.body["RequestId"])
    params = {"InstanceId": "mqtt-cn-hz01", "RecoveryInstanceId": "mqtt-cn-sh01"}
    outcome = call_legacy(server.api(), server.keys.root, "DisasterRecovery", params, method)
    assert outcome.status == 200, outcome


def test_repeated_downgrade_is_idempotent(server):
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))
    assert_success(recover(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))
    assert_success(recover(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))


def test_last_member_is_not_downgraded(server):
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01"))
    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-sh01")
    assert outcome.status == 400
    assert outcome.code == "InvalidParameter.DowngradeInstanceId"
    assert "last member" in outcome.message
    assert_success(recover(server, "mqtt-cn-sh01", "mqtt-cn-hz01"))
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-sh01"))


def test_malformed_and_missing_parameters(server):
    outcome = downgrade(server, "mqtt-cn-hz01", "not an id!")
    assert (outcome.status, outcome.code) == (400, "InvalidParameter.DowngradeInstanceId")
    assert "not an id!" in outcome.message
    outcome = downgrade(server, None, "mqtt-cn-hz01")
    assert (outcome.status, outcome.code) == (400, "InvalidParameter.InstanceId")
    outcome = recover(server, "mqtt-cn-hz01", None)
    assert (outcome.status, outcome.code) == (400, "InvalidParameter.RecoveryInstanceId")


def test_unknown_and_foreign_instances(server):
    for target in ["mqtt-cn-nowhere", "mqtt-cn-other"]:
        outcome = downgrade(server, "mqtt-cn-hz01", target)
        assert (outcome.status, outcome.code) == (400, "InstancePermissionCheckFailed"), target
        assert target in outcome.message
    outcome = downgrade(server, "mqtt-cn-other", "mqtt-cn-other", key=server.keys.other)
    # The other account owns it, so its own key passes the ownership check and fails on the group.
    assert (outcome.status, outcome.code) == (400, "InvalidParameter.DowngradeInstanceId")


def test_edition_without_disaster_recovery(server):
    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-bj01")
    assert (outcome.status, outcome.code) == (404, "ApiNotSupport")
    assert "basic" in outcome.message


def test_instances_in_different_groups(server):
    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-solo")
    assert (outcome.status, outcome.code) == (400, "InvalidParameter.DowngradeInstanceId")
    assert "not in one disaster-recovery group" in outcome.message


def test_ram_policies(server):
    assert_success(downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01", key=server.keys.operator))
    assert_success(recover(server, "mqtt-cn-hz01", "mqtt-cn-hz01", key=server.keys.operator))

    outcome = downgrade(server, "mqtt-cn-sh01", "mqtt-cn-sh01", key=server.keys.operator)
    assert (outcome.status, outcome.code) == (403, "NoPermission")
    assert outcome.body["AccessDeniedDetail"]["NoPermissionType"] == "ImplicitDeny"

    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01", key=server.keys.denied)
    assert (outcome.status, outcome.code) == (403, "NoPermission")
    assert outcome.body["AccessDeniedDetail"]["NoPermissionType"] == "ExplicitDeny"
    assert outcome.body["AccessDeniedDetail"]["AuthAction"] == "mq:DisasterDowngrade"

    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-hz01", key=server.keys.idle)
    assert (outcome.status, outcome.code) == (403, "NoPermission")


def test_check_order(server):
    # A malformed parameter wins over a RAM denial, and a RAM denial over a missing instance.
    outcome = downgrade(server, "mqtt-cn-hz01", "bad id", key=server.keys.idle)
    assert outcome.code == "InvalidParameter.DowngradeInstanceId"
    outcome = downgrade(server, "mqtt-cn-hz01", "mqtt-cn-nowhere", key=server.keys.idle)
    assert outcome.code == "NoPermission"
    # Ownership comes before the edition check, and the edition before the group check.
    outcome = downgrade(server, "mqtt-cn-bj01", "mqtt-cn-other")
    assert outcome.code == "InstancePermissionCheckFailed"
    outcome = downgrade(server, "mqtt-cn-solo", "mqtt-cn-bj01")
    assert outcome.code == "ApiNotSupport"


def test_gateway_errors_through_sdk(server):
    wrong_secret = (server.keys.root[0], "not-the-secret")
    outcome = call_tea(server.api(), wrong_secret, "DisasterDowngrade", "mqtt-cn-hz01", "mqtt-cn-hz01")
    assert (outcome.status, outcome.code) == (400, "SignatureDoesNotMatch")
    outcome = call_legacy(server.api(), wrong_secret, "DisasterDowngrade", {"InstanceId": "mqtt-cn-hz01", "DowngradeInstanceId": "mqtt-cn-hz01"})
    assert outcome.code == "SignatureDoesNotMatch"
    unknown = ("LTAInobody", "secret")
    outcome = call_tea(server.api(), unknown, "DisasterDowngrade", "mqtt-cn-hz01", "mqtt-cn-hz01")
    assert outcome.code == "InvalidAccessKeyId.NotFound"
    outcome = call_legacy(server.api(), server.keys.root, "NoSuchAction", {})
    assert (outcome.status, outcome.code) == (404, "InvalidApi.NotFound")


def test_failed_store_write_changes_nothing(tmp_path):
    srv = Server(tmp_path, busy_timeout_ms=300).start()
    try:
        database = sqlite3.connect(srv.data_dir / "switchyard.db", timeout=1, isolation_level=None)
        database.execute("BEGIN EXCLUSIVE")
        outcome = downgrade(srv, "mqtt-cn-hz01", "mqtt-cn-hz01")
        assert (outcome.status, outcome.code) == (500, "InternalError"), outcome
        database.execute("ROLLBACK")
        database.close()
        # Nothing changed: the member still has access, so the last-member rule still lets sh01 go.
        assert_success(downgrade(srv, "mqtt-cn-hz01", "mqtt-cn-sh01"))
        audit = subprocess.run(
            [str(BINARY), "audit", "--config", str(srv.config_path)],
            capture_output=True, text=True, check=True,
        ).stdout
        assert "mqtt-cn-sh01" in audit
        assert audit.count("DisasterDowngrade") == 1, audit
    finally:
        srv.stop()


def test_throttling(tmp_path):
    srv = Server(tmp_path, throttle_rate=1, throttle_burst=2).start()
    try:
        codes = [downgrade(srv, "mqtt-cn-hz01", "mqtt-cn-hz01").code for _ in range(5)]
        assert "Throttling.User" in codes, codes
    finally:
        srv.stop()
