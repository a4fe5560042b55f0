#!/usr/bin/env python3
"""Calls DisasterDowngrade or DisasterRecovery on the default deployment with the official SDK.

Usage: python3 examples/dr.py downgrade mqtt-cn-hz01
       python3 examples/dr.py recover mqtt-cn-hz01
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
    parser.add_argument("action", choices=["downgrade", "recover"])
    parser.add_argument("instance_id", help="member to downgrade or recover, e.g. mqtt-cn-hz01")
    parser.add_argument("--data-dir", default="switchyard-data", help="data directory of `switchyard serve`")
    parser.add_argument("--endpoint", default="127.0.0.1:18080", help="management API address")
    args = parser.parse_args()

    key = tomllib.loads((pathlib.Path(args.data_dir) / "default-access-key.toml").read_text())
    client = Client(Config(
        access_key_id=key["access_key_id"], access_key_secret=key["access_key_secret"],
        endpoint=args.endpoint, protocol="http",
    ))
    if args.action == "downgrade":
        request = models.DisasterDowngradeRequest(
            instance_id=args.instance_id, downgrade_instance_id=args.instance_id)
        response = client.disaster_downgrade(request)
    else:
        request = models.DisasterRecoveryRequest(
            instance_id=args.instance_id, recovery_instance_id=args.instance_id)
        response = client.disaster_recovery(request)
    print(response.body.to_map())


if __name__ == "__main__":
    main()
