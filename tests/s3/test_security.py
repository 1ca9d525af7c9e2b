"""Borrowed keys against a real store (Garage): tollgate must charge exactly the key the store
authenticates, and nobody who merely knows a key ID can burn its quota.

- Every shape where tollgate and the store could read different keys from one request (two
  Credential= in a header, a presigned URL plus a header, lower-case or percent-encoded
  presigned names, presigned V2 plus a V4 header) is refused with 400 InvalidArgument; a key at
  its limit cannot read a private object through any of them.
- Requests naming a victim's key with a wrong secret are rejected by Garage; their slots are
  given back, so the victim keeps its full rate, and the forger's address is refused after
  its penalty limit."""

import uuid
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from conftest import DIRECT, Target, default_key_tiers
from s3lib import RawConn, SigV4

pytestmark = pytest.mark.skipif(DIRECT, reason="needs tollgate")


def private_object(t: Target) -> str:
    key = f"private-{uuid.uuid4()}"
    t.client("premium").put_object(Bucket=t.bucket, Key=key, Body=b"SECRET-CONTENT")
    return key


def at_limit(garage, tollgate_factory) -> Target:
    """tollgate in front of Garage where `basic` allows 1 request per minute."""
    tg = tollgate_factory([garage.addr], default_key_tiers(garage),
                          tiers={"premium": (60000, 5000), "standard": (60000, 5000),
                                 "basic": (1, 1), "unknown": (60000, 5000)},
                          limits_toml='unlisted_keys = "per_key"')
    return Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)


def raw_get(t: Target, target: str, headers: list[tuple[str, str]], source=None):
    head = f"GET {target} HTTP/1.1\r\nHost: {t.host_header}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    with RawConn(t.port, source=source) as c:
        c.send(head.encode())
        return c.read_response()


def test_a_key_at_its_limit_cannot_read_through_any_key_confusion(garage, tollgate_factory):
    t = at_limit(garage, tollgate_factory)
    obj = private_object(t)
    basic = t.keys["basic"]
    me = t.client("basic")
    assert me.get_object(Bucket=t.bucket, Key=obj)["Body"].read() == b"SECRET-CONTENT"
    with pytest.raises(ClientError) as e:
        me.get_object(Bucket=t.bucket, Key=obj)
    assert e.value.response["Error"]["Code"] == "SlowDown", "basic is at its limit"

    decoy = f"AKDECOY{uuid.uuid4().hex[:13].upper()}"
    signer = SigV4(basic.id, basic.secret, t.region)
    path = f"/{t.bucket}/{obj}"
    s = signer.sign("GET", t.host_header, path)
    auth = dict(s.headers)["Authorization"]
    sig_headers = [(k, v) for k, v in s.headers if k not in ("Host", "Authorization")]
    decoy_auth = auth.replace(f"Credential={basic.id}/", f"Credential={decoy}/")
    presigned_v4 = me.generate_presigned_url("get_object", Params={"Bucket": t.bucket, "Key": obj},
                                             ExpiresIn=300)
    v4_target = presigned_v4[presigned_v4.index(urlsplit(presigned_v4).path):]
    v2 = t.client("basic", signature_version="s3")
    presigned_v2 = v2.generate_presigned_url("get_object", Params={"Bucket": t.bucket, "Key": obj},
                                             ExpiresIn=300)
    v2_target = presigned_v2[presigned_v2.index(urlsplit(presigned_v2).path):]
    cred_first, rest = auth.split(", ", 1)
    shapes = {
        "two Credential= (decoy first)":
            (path, sig_headers + [("Authorization", f"{cred_first.replace(basic.id, decoy)}, {auth[len('AWS4-HMAC-SHA256 '):]}")]),
        "presigned V4 + a decoy header":
            (v4_target, [("Authorization", decoy_auth)] + sig_headers),
        "lower-case presigned names + a decoy header":
            (v4_target.replace("X-Amz-", "x-amz-"), [("Authorization", decoy_auth)] + sig_headers),
        "percent-encoded presigned names + a decoy header":
            (v4_target.replace("X-Amz-Credential", "X%2DAmz%2DCredential"),
             [("Authorization", decoy_auth)] + sig_headers),
        "presigned V2 + a decoy V4 header":
            (v2_target, [("Authorization", decoy_auth)] + sig_headers),
    }
    for what, (target, headers) in shapes.items():
        r = raw_get(t, target, headers)
        assert r.status == 400, f"{what}: {r.status} {r.body[:200]!r}"
        assert r.xml_code() == "InvalidArgument", what
        assert b"SECRET-CONTENT" not in r.body, what


def test_forged_requests_for_a_victims_key_burn_nothing(garage, tollgate_factory):
    # basic: 4 per minute; a forger's failures are penalised after 6.
    tg = tollgate_factory([garage.addr], default_key_tiers(garage),
                          tiers={"premium": (60000, 5000), "standard": (60000, 5000),
                                 "basic": (4, 4), "unknown": (60000, 5000)},
                          limits_toml="[limits.penalty]\nfailures = 6\nwindow = \"60s\"")
    t = Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)
    obj = private_object(t)
    victim = t.keys["basic"]
    forger = SigV4(victim.id, "not-the-secret-" + "x" * 25, t.region)
    statuses = []
    for _ in range(6):
        s = forger.sign("GET", t.host_header, f"/{t.bucket}/{obj}")
        r = raw_get(t, s.target, [(k, v) for k, v in s.headers if k != "Host"], source="127.0.0.2")
        statuses.append(r.status)
        assert b"SECRET-CONTENT" not in r.body
    assert statuses == [403] * 6, f"Garage rejected each forgery: {statuses}"
    # The victim still has its whole budget (4 per minute), and then no more.
    me = t.client("basic")
    for i in range(4):
        assert me.get_object(Bucket=t.bucket, Key=obj)["Body"].read() == b"SECRET-CONTENT", i
    with pytest.raises(ClientError) as e:
        me.get_object(Bucket=t.bucket, Key=obj)
    assert e.value.response["Error"]["Code"] == "SlowDown"
    # The forger's address is over its failure window: refused before Garage.
    s = forger.sign("GET", t.host_header, f"/{t.bucket}/{obj}")
    r = raw_get(t, s.target, [(k, v) for k, v in s.headers if k != "Host"], source="127.0.0.2")
    assert r.status == 429 and r.xml_code() == "SlowDown", (r.status, r.body[:200])
    assert b"failed authentications" in r.body


def test_with_verify_real_clients_pass_and_forgeries_never_reach_garage(garage, tollgate_factory,
                                                                       workdir):
    """[limits.verify] with Garage's own secrets: boto3's SigV4 (header and presigned, single and
    multipart uploads) verifies in tollgate exactly as in Garage (Garage has no SigV2; the
    SigV2 forms are checked against loadgen's signer in tests/hostile.rs); a wrong secret is
    refused by tollgate itself (no x-amz-request-id: Garage never saw it)."""
    import json
    import os
    import urllib.request

    secrets = workdir / f"secrets-{uuid.uuid4().hex[:8]}.toml"
    secrets.write_text("[secrets]\n" + "".join(
        f"\"{k.id}\" = '{k.secret}'\n" for k in garage.keys.values()))
    os.chmod(secrets, 0o600)
    tg = tollgate_factory([garage.addr], default_key_tiers(garage),
                          limits_toml=f"[limits.verify]\nsecrets_file = \"{secrets}\"")
    t = Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)
    c = t.client("premium")
    key = f"verified-{uuid.uuid4()}"
    c.put_object(Bucket=t.bucket, Key=key, Body=b"v" * 1000)
    assert c.get_object(Bucket=t.bucket, Key=key)["Body"].read() == b"v" * 1000
    assert c.head_object(Bucket=t.bucket, Key=key)["ContentLength"] == 1000
    names = [o["Key"] for o in c.list_objects_v2(Bucket=t.bucket, Prefix="verified-")["Contents"]]
    assert key in names
    mp = c.create_multipart_upload(Bucket=t.bucket, Key=key + "-mp")
    part = c.upload_part(Bucket=t.bucket, Key=key + "-mp", UploadId=mp["UploadId"], PartNumber=1,
                         Body=b"p" * (5 * 1024 * 1024))
    c.complete_multipart_upload(Bucket=t.bucket, Key=key + "-mp", UploadId=mp["UploadId"],
                                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    url = c.generate_presigned_url("get_object", Params={"Bucket": t.bucket, "Key": key},
                                   ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"v" * 1000
    c.delete_object(Bucket=t.bucket, Key=key)

    forger = t.client("basic", secret="not-the-secret-" + "x" * 25)
    for _ in range(3):
        with pytest.raises(ClientError) as e:
            forger.get_object(Bucket=t.bucket, Key=key + "-mp")
        assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        headers = e.value.response["ResponseMetadata"]["HTTPHeaders"]
        assert "x-amz-request-id" not in headers, "answered by tollgate, not Garage"
    with urllib.request.urlopen(f"http://127.0.0.1:{tg.admin_port}/stats", timeout=5) as r:
        st = json.loads(r.read())
    assert st["signature_failures"] == 3, st
    assert st["auth_failures"] == 0, "nothing reached Garage to be refused there"
