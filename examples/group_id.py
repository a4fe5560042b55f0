#!/usr/bin/env python3
"""Creates, lists or deletes a Group ID on the default deployment with the official SDK.

Usage: python3 examples/group_id.py create mqtt-cn-hz01 GID_sensors
       python3 examples/group_id.py list mqtt-cn-hz01
       python3 examples/group_id.py delete mqtt-cn-hz01 GID_sensors
Needs `pip install alibabacloud-onsmqtt20200420`; reads the AccessKey from ./switchyard-data.
"""

import argparse
import pathlib
import tomllib

from alibabacloud_onsmqtt20200420 import models
from alibabacloud_onsmqtt20200420.client import Client
from alibabacloud_tea_openapi.models import Config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["create", "list", "delete"])
    parser.add_argument("instance_id", help="instance of the Group ID, e.g. mqtt-cn-hz01")
    parser.add_argument("group_id", nargs="?", help="Group ID to create or delete, e.g. GID_sensors")
    parser.add_argument("--data-dir", default="switchyard-data", help="data directory of `switchyard serve`")
    parser.add_argument("--endpoint", default="127.0.0.1:18080", help="management API address")
    args = parser.parse_args()
    if args.action != "list" and not args.group_id:
        parser.error(f"{args.action} needs a Group ID, such as GID_sensors")

    key = tomllib.loads((pathlib.Path(args.data_dir) / "default-access-key.toml").read_text())
    client = Client(Config(
        access_key_id=key["access_key_id"], access_key_secret=key["access_key_secret"],
        endpoint=args.endpoint, protocol="http",
    ))
    if args.action == "create":
        request = models.CreateGroupIdRequest(instance_id=args.instance_id, group_id=args.group_id)
        response = client.create_group_id(request)
    elif args.action == "delete":
        request = models.DeleteGroupIdRequest(instance_id=args.instance_id, group_id=args.group_id)
        response = client.delete_group_id(request)
    else:
        response = client.list_group_id(models.ListGroupIdRequest(instance_id=args.instance_id))
    print(response.body.to_map())


if __name__ == "__main__":
    main()
