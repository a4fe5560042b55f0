"""Gateway rules checked with hand-signed requests: replay, clock window, signature and errors.

The classic HMAC-SHA1 signature is computed here from its published definition, independently of
Switchyard's code.
"""

import base64
import datetime
import hashlib
import hmac
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

from sdk import REQUEST_ID


def percent_encode(value):
    return urllib.parse.quote(str(value), safe="-_.~")


def sign_v1(method, params, secret):
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    string_to_sign = f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"
    digest = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def common_params(key, action, timestamp=None, nonce=None):
    now = timestamp or datetime.datetime.now(datetime.timezone.utc)
    return {
        "AccessKeyId": key[0],
        "Action": action,
        "Format": "JSON",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2020-04-20",
    }


def send(server, params, secret, method="GET", body_params=None):
    """Sends a signed request; `body_params` go in a form body and are signed with the query."""
    signed = dict(params)
    signed.update(body_params or {})
    query = dict(params)
    query["Signature"] = sign_v1(method, signed, secret)
    url = f"http://{server.api()}/?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    data = urllib.parse.urlencode(body_params).encode() if body_params else None
    request = urllib.request.Request(url, data=data, method=method)
    if data:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}


def downgrade_params(key, **kwargs):
    params = common_params(key, "DisasterDowngrade", **kwargs)
    params.update({"InstanceId": "mqtt-cn-hz01", "DowngradeInstanceId": "mqtt-cn-hz01"})
    return params


def test_signed_request_succeeds(server):
    status, body, _ = send(server, downgrade_params(server.keys.root), server.keys.root[1])
    assert status == 200, body
    assert body["Success"] is True


def test_parameters_in_form_body_are_signed(server):
    params = common_params(server.keys.root, "DisasterDowngrade")
    body_params = {"InstanceId": "mqtt-cn-hz01", "DowngradeInstanceId": "mqtt-cn-hz01"}
    status, body, _ = send(server, params, server.keys.root[1], "POST", body_params)
    assert status == 200, body


def test_nonce_replay_is_rejected(server):
    params = downgrade_params(server.keys.root)
    first = send(server, params, server.keys.root[1])
    second = send(server, params, server.keys.root[1])
    assert first[0] == 200, first
    assert (second[0], second[1]["Code"]) == (400, "SignatureNonceUsed"), second


def test_timestamp_outside_window_is_rejected(server):
    for minutes in (-16, 16):
        moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
        status, body, _ = send(server, downgrade_params(server.keys.root, timestamp=moment), server.keys.root[1])
        assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired"), (minutes, body)


def test_malformed_timestamp_is_rejected(server):
    params = downgrade_params(server.keys.root)
    params["Timestamp"] = "yesterday"
    status, body, _ = send(server, params, server.keys.root[1])
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Format"), body


def test_signature_mismatch_shows_string_to_sign(server):
    params = downgrade_params(server.keys.root)
    status, body, _ = send(server, params, "wrong-secret")
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "server string to sign is:" in body["Message"]
    assert "GET&%2F&AccessKeyId" in body["Message"]


def test_error_body_fields(server):
    params = common_params(server.keys.root, "NoSuchAction")
    status, body, headers = send(server, params, server.keys.root[1])
    assert status == 404
    assert body["Code"] == "InvalidApi.NotFound"
    assert REQUEST_ID.match(body["RequestId"])
    assert body["HostId"]
    assert body["Recommend"].endswith(body["RequestId"])
    assert headers["content-type"].startswith("application/json")


def test_missing_common_parameter(server):
    params = downgrade_params(server.keys.root)
    del params["Timestamp"]
    status, body, _ = send(server, params, server.keys.root[1])
    assert status == 400
    assert body["Code"] == "MissingTimestamp", body
