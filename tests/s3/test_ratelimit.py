"""Rate limits seen by a real SDK: boto3 gets S3's SlowDown through tollgate, retries by
itself (the retry count is visible in the response metadata), and the object is stored
exactly once — the denied attempts never reached Garage."""

import json
import urllib.request
import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import DIRECT, Target, default_key_tiers

pytestmark = pytest.mark.skipif(DIRECT, reason="rate limits need tollgate")


def stats(tg) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{tg.admin_port}/stats", timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("status", [429, 503])
def test_boto3_sees_slowdown_retries_and_stores_once(garage, tollgate_factory, status):
    # basic: 1 request per second, 100 per minute.
    tg = tollgate_factory([garage.addr], default_key_tiers(garage),
                          tiers={"premium": (60000, 5000), "standard": (60000, 5000),
                                 "basic": (100, 1), "unknown": (60000, 5000)},
                          limits_toml=f"deny_status = {status}")
    t = Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)
    k = t.keys["basic"]

    # Without retries the SDK surfaces the error code itself.
    no_retry = t.client(k)
    no_retry.put_object(Bucket=t.bucket, Key=f"warm-{uuid.uuid4()}", Body=b"x")
    with pytest.raises(ClientError) as e:
        no_retry.put_object(Bucket=t.bucket, Key=f"denied-{uuid.uuid4()}", Body=b"y")
    assert e.value.response["Error"]["Code"] == "SlowDown"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status

    # With the SDK's standard retry mode, the request goes through after retries.
    retrying = t.client(k, retries={"mode": "standard", "total_max_attempts": 10})
    key = f"retried-{uuid.uuid4()}"
    before = stats(tg)["tiers"]["basic"]["methods"].get("PUT", {"admitted": 0})["admitted"]
    resp = retrying.put_object(Bucket=t.bucket, Key=key, Body=b"stored once")
    retries = resp["ResponseMetadata"]["RetryAttempts"]
    assert retries >= 1, "the first attempt must have been throttled"
    after = stats(tg)["tiers"]["basic"]["methods"]["PUT"]
    assert after["admitted"] - before == 1, "exactly one PUT reached Garage"
    assert after["denied"] >= 1 + retries
    got = t.client("premium").get_object(Bucket=t.bucket, Key=key)["Body"].read()
    assert got == b"stored once"
