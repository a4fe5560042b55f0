"""Thin wrappers over the official SDKs, returning status, code and body for both outcomes."""

import json
import re

from alibabacloud_onsmqtt20200420 import models as mqtt_models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi import models as open_api_models
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest

REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")


class Outcome:
    def __init__(self, status, code, body, message=""):
        self.status = status
        self.code = code
        self.body = body
        self.message = message

    def __repr__(self):
        return f"Outcome(status={self.status}, code={self.code!r}, message={self.message!r})"


def tea_client(endpoint, key, signature_algorithm=None):
    config = open_api_models.Config(
        access_key_id=key[0], access_key_secret=key[1], endpoint=endpoint, protocol="http"
    )
    if signature_algorithm:
        config.signature_algorithm = signature_algorithm
    return Client(config)


def call_tea(endpoint, key, action, instance_id, target_id, signature_algorithm=None):
    """Calls DisasterDowngrade or DisasterRecovery with the current SDK (ACS3 by default)."""
    client = tea_client(endpoint, key, signature_algorithm)
    try:
        if action == "DisasterDowngrade":
            request = mqtt_models.DisasterDowngradeRequest(
                instance_id=instance_id, downgrade_instance_id=target_id
            )
            response = client.disaster_downgrade(request)
        else:
            request = mqtt_models.DisasterRecoveryRequest(
                instance_id=instance_id, recovery_instance_id=target_id
            )
            response = client.disaster_recovery(request)
    except Exception as err:  # the SDK raises ClientException or ServerException
        data = getattr(err, "data", None) or {}
        status = getattr(err, "status_code", None) or data.get("statusCode")
        return Outcome(status, getattr(err, "code", None), data, getattr(err, "message", ""))
    return Outcome(response.status_code, response.body.code, response.body.to_map())


def call_legacy(endpoint, key, action, params, method="POST"):
    """Calls an action through aliyun-python-sdk-core's CommonRequest (classic HMAC-SHA1)."""
    client = AcsClient(key[0], key[1], "cn-hangzhou", auto_retry=False)
    request = CommonRequest(domain=endpoint, version="2020-04-20", action_name=action)
    request.set_protocol_type("http")
    request.set_method(method)
    for name, value in params.items():
        request.add_query_param(name, value)
    try:
        body = json.loads(client.do_action_with_exception(request))
    except ServerException as err:
        return Outcome(err.get_http_status(), err.get_error_code(), {"RequestId": err.get_request_id()}, err.get_error_msg())
    return Outcome(200, body.get("Code"), body)


def call_group_tea(endpoint, key, action, signature_algorithm=None, **fields):
    """Calls CreateGroupId, DeleteGroupId or ListGroupId with the current SDK.

    `fields` are the request model's fields (instance_id, group_id, tags); None leaves one out.
    """
    client = tea_client(endpoint, key, signature_algorithm)
    methods = {
        "CreateGroupId": (mqtt_models.CreateGroupIdRequest, client.create_group_id),
        "DeleteGroupId": (mqtt_models.DeleteGroupIdRequest, client.delete_group_id),
        "ListGroupId": (mqtt_models.ListGroupIdRequest, client.list_group_id),
    }
    model, method = methods[action]
    try:
        response = method(model(**fields))
    except Exception as err:  # the SDK raises ClientException or ServerException
        data = getattr(err, "data", None) or {}
        status = getattr(err, "status_code", None) or data.get("statusCode")
        return Outcome(status, getattr(err, "code", None), data, getattr(err, "message", ""))
    return Outcome(response.status_code, None, response.body.to_map())
