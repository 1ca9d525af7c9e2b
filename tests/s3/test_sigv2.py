"""SigV2 clients through tollgate, against s3s-fs (Garage does not speak SigV2; s3s-fs checks it).

boto3 with signature_version='s3' (botocore's HMAC-v1 signer) and hand-made V2 headers.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from s3lib import random_bytes, sha256_hex, sign_v2


def _capture_auth(client) -> list[str]:
    seen: list[str] = []

    def hook(request, **_):
        seen.append(request.headers.get("Authorization", b"").decode()
                    if isinstance(request.headers.get("Authorization"), bytes)
                    else request.headers.get("Authorization", ""))

    client.meta.events.register("before-send.s3", hook)
    return seen


def test_sigv2_boto3_put_get(s3fs_target, obj_key):
    c = s3fs_target.client("s3fs", signature_version="s3")
    auth = _capture_auth(c)
    data = random_bytes(256 * 1024 + 1)
    c.put_object(Bucket=s3fs_target.bucket, Key=obj_key, Body=data)
    got = c.get_object(Bucket=s3fs_target.bucket, Key=obj_key)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)
    key_id = s3fs_target.keys["s3fs"].id
    assert len(auth) == 2 and all(a.startswith(f"AWS {key_id}:") for a in auth), auth


def test_sigv2_boto3_wrong_secret_is_403(s3fs_target, obj_key):
    c = s3fs_target.client("s3fs", signature_version="s3", secret="not-the-secret")
    auth = _capture_auth(c)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=s3fs_target.bucket, Key=obj_key, Body=b"x" * 100)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert auth and auth[0].startswith("AWS ")
    # nothing was stored
    good = s3fs_target.client("s3fs", signature_version="s3")
    with pytest.raises(ClientError) as e:
        good.head_object(Bucket=s3fs_target.bucket, Key=obj_key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_sigv2_hand_signed_put_get_and_tampered(s3fs_target, obj_key):
    k = s3fs_target.keys["s3fs"]
    path = f"/{s3fs_target.bucket}/{obj_key}"
    data = random_bytes(4096)
    with s3fs_target.raw() as conn:
        hdrs = sign_v2("PUT", path, k.id, k.secret, content_type="application/octet-stream")
        head = [f"PUT {path} HTTP/1.1", f"Host: {s3fs_target.host_header}",
                f"Content-Length: {len(data)}"] + [f"{n}: {v}" for n, v in hdrs]
        conn.send(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        r = conn.read_response("PUT")
        assert r.status == 200, r.body
        hdrs = sign_v2("GET", path, k.id, k.secret)
        head = [f"GET {path} HTTP/1.1", f"Host: {s3fs_target.host_header}"]
        conn.send(("\r\n".join(head + [f"{n}: {v}" for n, v in hdrs]) + "\r\n\r\n").encode())
        r = conn.read_response()
        assert r.status == 200 and r.body == data
        # same request signed with the wrong secret
        hdrs = sign_v2("GET", path, k.id, k.secret + "x")
        conn.send(("\r\n".join(head + [f"{n}: {v}" for n, v in hdrs]) + "\r\n\r\n").encode())
        r = conn.read_response()
        assert r.status == 403, (r.status, r.body)
        assert r.xml_code() in ("SignatureDoesNotMatch", "AccessDenied"), r.body
