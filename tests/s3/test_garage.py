"""Real S3 clients against Garage through tollgate, over plain HTTP and over HTTPS.

Every test takes the parametrized `target` fixture (conftest.py), so it runs twice: `[http]`
through tollgate's plain listener and `[https]` through its rustls listener (clients verify
against the test CA only: boto3 verify=, aws-cli AWS_CA_BUNDLE, curl --cacert, ssl contexts).
Each test asserts what the client gets back: bytes (sha256), statuses, error codes, framing.
With TOLLGATE_DIRECT=1 the [http] tests run against Garage alone (suite self-check) and the
[https] ones are skipped.
"""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from conftest import aws_env, run
from s3lib import (STREAMING, UNSIGNED_TRAILER, RawConn, SigV4, aws_chunked_body,
                   aws_chunked_length, crc32_b64, random_bytes, sha256_file, sha256_hex,
                   signed_request, unsigned_trailer_body)

MiB = 1024 * 1024


def test_boto3_put_get_10mib(target, obj_key):
    c = target.client()
    data = random_bytes(10 * MiB)
    put = c.put_object(Bucket=target.bucket, Key=obj_key, Body=data)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    got = c.get_object(Bucket=target.bucket, Key=obj_key)
    assert got["ContentLength"] == len(data)
    body = got["Body"].read()
    assert sha256_hex(body) == sha256_hex(data)


def test_awscli_cp_up_and_down_10mib(target, obj_key, tmp_path, aws_cli, workdir):
    src = tmp_path / "up.bin"
    src.write_bytes(random_bytes(10 * MiB))
    dst = tmp_path / "down.bin"
    env = aws_env(target, workdir)
    url = f"s3://{target.bucket}/{obj_key}"
    base = [aws_cli, "--endpoint-url", target.endpoint]
    # 10 MiB is above the CLI's 8 MiB multipart threshold: this is a real multipart upload
    run(base + ["s3", "cp", src, url], timeout=120, env=env)
    run(base + ["s3", "cp", url, dst], timeout=120, env=env)
    assert dst.stat().st_size == 10 * MiB
    assert sha256_file(dst) == sha256_file(src)
    head = target.client().head_object(Bucket=target.bucket, Key=obj_key)
    assert head["ContentLength"] == 10 * MiB
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # 8 MiB + 2 MiB parts
    ls = run(base + ["s3", "ls", url], timeout=60, env=env).stdout
    assert obj_key in ls and str(10 * MiB) in ls


def test_multipart_20mib_in_5mib_parts(target, obj_key):
    c = target.client()
    data = random_bytes(20 * MiB)
    up = c.create_multipart_upload(Bucket=target.bucket, Key=obj_key)
    upload_id = up["UploadId"]
    parts = []
    for n in range(4):
        chunk = data[n * 5 * MiB:(n + 1) * 5 * MiB]
        r = c.upload_part(Bucket=target.bucket, Key=obj_key, UploadId=upload_id,
                          PartNumber=n + 1, Body=chunk)
        assert r["ETag"].strip('"') == hashlib.md5(chunk).hexdigest()
        parts.append({"PartNumber": n + 1, "ETag": r["ETag"]})
    listed = c.list_parts(Bucket=target.bucket, Key=obj_key, UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3, 4]
    assert all(p["Size"] == 5 * MiB for p in listed["Parts"])
    done = c.complete_multipart_upload(Bucket=target.bucket, Key=obj_key, UploadId=upload_id,
                                       MultipartUpload={"Parts": parts})
    assert done["ETag"].strip('"').endswith("-4")
    got = c.get_object(Bucket=target.bucket, Key=obj_key)
    assert got["ContentLength"] == len(data)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)
    # a ranged GET across the part boundary
    rng = c.get_object(Bucket=target.bucket, Key=obj_key, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert rng["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert rng["Body"].read() == data[5 * MiB - 10:5 * MiB + 10]


def test_list_objects(target, obj_key):
    c = target.client()
    prefix = obj_key + "/"
    sizes = {f"{prefix}a": 10, f"{prefix}b": 2000, f"{prefix}c/d": 30000}
    for k, n in sizes.items():
        c.put_object(Bucket=target.bucket, Key=k, Body=random_bytes(n))
    r = c.list_objects_v2(Bucket=target.bucket, Prefix=prefix)
    assert {o["Key"]: o["Size"] for o in r["Contents"]} == sizes
    # pagination
    p1 = c.list_objects_v2(Bucket=target.bucket, Prefix=prefix, MaxKeys=2)
    assert p1["IsTruncated"] and len(p1["Contents"]) == 2
    p2 = c.list_objects_v2(Bucket=target.bucket, Prefix=prefix, MaxKeys=2,
                           ContinuationToken=p1["NextContinuationToken"])
    assert not p2["IsTruncated"]
    assert [o["Key"] for o in p1["Contents"] + p2["Contents"]] == sorted(sizes)
    # delimiter: common prefixes
    d = c.list_objects_v2(Bucket=target.bucket, Prefix=prefix, Delimiter="/")
    assert [o["Key"] for o in d["Contents"]] == [f"{prefix}a", f"{prefix}b"]
    assert [p["Prefix"] for p in d["CommonPrefixes"]] == [f"{prefix}c/"]
    # ListObjects v1 too
    v1 = c.list_objects(Bucket=target.bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in v1["Contents"]) == sorted(sizes)


def test_head_has_content_length_and_no_body(target, obj_key):
    data = random_bytes(12345)
    target.client().put_object(Bucket=target.bucket, Key=obj_key, Body=data)
    with target.raw() as conn:
        conn.send(signed_request(target, "HEAD", obj_key).head_bytes())
        r = conn.read_response("HEAD")
        assert r.status == 200
        assert r.header("Content-Length") == "12345"
        assert r.header("ETag").strip('"') == hashlib.md5(data).hexdigest()
        # no body bytes may follow a HEAD response
        assert conn.pending_bytes(1.0) == b""
        # the connection is still usable and in sync
        conn.send(signed_request(target, "GET", obj_key).head_bytes())
        g = conn.read_response("GET")
        assert g.status == 200 and g.body == data


def test_delete_then_get_is_404_nosuchkey(target, obj_key):
    c = target.client()
    c.put_object(Bucket=target.bucket, Key=obj_key, Body=b"short-lived")
    assert c.get_object(Bucket=target.bucket, Key=obj_key)["Body"].read() == b"short-lived"
    d = c.delete_object(Bucket=target.bucket, Key=obj_key)
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=target.bucket, Key=obj_key)
    assert e.value.response["Error"]["Code"] == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with target.raw() as conn:
        conn.send(signed_request(target, "GET", obj_key).head_bytes())
        r = conn.read_response()
        assert r.status == 404 and r.xml_code() == "NoSuchKey"
        assert "xml" in (r.header("Content-Type") or "")


def test_presigned_v4_get_and_put_with_curl(target, obj_key, tmp_path):
    c = target.client()
    data = random_bytes(3 * MiB + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    put_url = c.generate_presigned_url("put_object", Params={"Bucket": target.bucket,
                                                             "Key": obj_key}, ExpiresIn=300)
    assert put_url.startswith(target.endpoint + "/")
    assert "X-Amz-Credential=" in put_url and "X-Amz-Signature=" in put_url
    p = target.curl("-o", "/dev/null", "-w", "%{http_code}", "-T", src, put_url)
    assert p.stdout == "200", (p.stdout, p.stderr)

    get_url = c.generate_presigned_url("get_object", Params={"Bucket": target.bucket,
                                                             "Key": obj_key}, ExpiresIn=300)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in get_url
    out = tmp_path / "out.bin"
    p = target.curl("-o", out, "-w", "%{http_code}", get_url)
    assert p.stdout == "200", (p.stdout, p.stderr)
    assert sha256_file(out) == sha256_hex(data)

    # a tampered presigned URL is refused by the store, and tollgate passes that on
    bad = get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    p = target.curl("-o", out, "-w", "%{http_code}", bad)
    assert p.stdout == "403", (p.stdout, p.stderr)


def _send_streaming(target, key: str, data: bytes, chunk: int, tamper: bool = False):
    encoded_len = aws_chunked_length(len(data), chunk)
    signed = signed_request(target, "PUT", key, payload_hash=STREAMING, headers=[
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", str(len(data))),
        ("Content-Length", str(encoded_len)),
    ])
    body = aws_chunked_body(signed, data, chunk)
    assert len(body) == encoded_len
    if tamper:  # flip a byte inside the second chunk's data, after signing
        i = body.index(b"\r\n", body.index(b"chunk-signature=", 100)) + 2 + 5
        body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1:]
    with target.raw(timeout=60) as conn:
        conn.send(signed.head_bytes())
        conn.send(body)
        r = conn.read_response("PUT")
        return r.status, r.body


def test_streaming_sigv4_aws_chunked_upload(target, obj_key):
    data = random_bytes(300_000)  # 4 full 64 KiB chunks + a partial one + the final empty one
    status, body = _send_streaming(target, obj_key, data, 64 * 1024)
    assert status == 200, body
    got = target.client().get_object(Bucket=target.bucket, Key=obj_key)
    assert got["ContentLength"] == len(data)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)


def test_streaming_sigv4_tampered_chunk_is_rejected(target, obj_key):
    """Proves the store really checks chunk signatures, so the test above means something."""
    data = random_bytes(200_000)
    status, body = _send_streaming(target, obj_key, data, 64 * 1024, tamper=True)
    assert status in (400, 403), (status, body)
    with pytest.raises(ClientError) as e:
        target.client().head_object(Bucket=target.bucket, Key=obj_key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _send_unsigned_trailer(target, key: str, data: bytes, checksum: str,
                           http_chunked: bool = False):
    """PUT with STREAMING-UNSIGNED-PAYLOAD-TRAILER. With http_chunked, the aws-chunked body is
    itself sent with Transfer-Encoding: chunked after a 100 Continue, which is exactly what
    boto3 1.44 does for put_object over HTTPS."""
    body = unsigned_trailer_body(data, 64 * 1024, ("x-amz-checksum-crc32", checksum))
    framing = [] if http_chunked else [("Content-Length", str(len(body)))]
    signed = signed_request(target, "PUT", key, payload_hash=UNSIGNED_TRAILER, headers=[
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", str(len(data))),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
    ] + framing)
    with target.raw(timeout=60) as conn:
        if not http_chunked:
            conn.send(signed.head_bytes() + body)
            return conn.read_response("PUT")
        conn.send(signed.head_bytes(extra=[("Expect", "100-continue"),
                                           ("Transfer-Encoding", "chunked")]))
        interim = conn.read_response("PUT")
        assert interim.status == 100, interim
        # uneven HTTP chunks that do not line up with the aws-chunked frames inside
        cuts = [0, 1000, 70_001, 70_002, len(body)]
        for a, b in zip(cuts, cuts[1:]):
            conn.send(f"{b - a:x}\r\n".encode() + body[a:b] + b"\r\n")
        conn.send(b"0\r\n\r\n")
        return conn.read_response("PUT")


@pytest.mark.parametrize("http_chunked", [False, True], ids=["content-length", "te-chunked"])
def test_streaming_unsigned_payload_trailer_upload(target, obj_key, http_chunked):
    data = random_bytes(150_000)
    r = _send_unsigned_trailer(target, obj_key, data, crc32_b64(data), http_chunked)
    assert r.status == 200, r.body
    got = target.client().get_object(Bucket=target.bucket, Key=obj_key, ChecksumMode="ENABLED")
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)
    assert got.get("ChecksumCRC32") == crc32_b64(data)


def test_streaming_unsigned_trailer_bad_checksum_is_rejected(target, obj_key):
    data = random_bytes(150_000)
    r = _send_unsigned_trailer(target, obj_key, data, crc32_b64(data + b"x"))
    assert 400 <= r.status < 500, (r.status, r.body)
    with pytest.raises(ClientError) as e:
        target.client().head_object(Bucket=target.bucket, Key=obj_key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_wrong_secret_403_passes_through_unchanged(target, garage, obj_key):
    wrong = "0" * 64
    with target.raw() as conn:
        conn.send(signed_request(target, "GET", obj_key, secret=wrong).head_bytes())
        via = conn.read_response()
    assert via.status == 403
    assert via.xml_code() in ("AccessDenied", "SignatureDoesNotMatch"), via.body
    # the same mistake sent straight to Garage gives the same status, code and message
    k = garage.keys["premium"]
    direct = SigV4(k.id, wrong, garage.region).sign(
        "GET", garage.addr, f"/{garage.bucket}/{obj_key}")
    with RawConn(garage.port) as conn:
        conn.send(direct.head_bytes())
        ref = conn.read_response()
    assert (via.status, via.xml_code()) == (ref.status, ref.xml_code())
    assert via.header("Content-Type") == ref.header("Content-Type")
    msg = lambda b: b.decode()[b.decode().find("<Message>"):b.decode().find("</Message>")]
    assert msg(via.body) == msg(ref.body)
    # and boto3 reports it as the error it is
    with pytest.raises(ClientError) as e:
        target.client(secret=wrong).get_object(Bucket=target.bucket, Key=obj_key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Code"] == via.xml_code()


def test_expect_100_continue_put(target, obj_key):
    data = random_bytes(1 * MiB + 3)
    signed = signed_request(target, "PUT", obj_key, payload_hash=sha256_hex(data),
                             headers=[("Content-Length", str(len(data)))])
    with target.raw(timeout=15) as conn:
        conn.send(signed.head_bytes(extra=[("Expect", "100-continue")]))
        interim = conn.read_response("PUT")
        assert interim.status == 100, interim
        conn.send(data)
        final = conn.read_response("PUT")
        assert final.status == 200, final.body
        assert final.header("ETag").strip('"') == hashlib.md5(data).hexdigest()
        # same connection, next request
        conn.send(signed_request(target, "GET", obj_key).head_bytes())
        g = conn.read_response()
        assert g.status == 200 and sha256_hex(g.body) == sha256_hex(data)


def test_keepalive_and_pipelining(target, obj_key):
    c = target.client()
    objs = {f"{obj_key}-{i}": random_bytes(1000 * (i + 1) + i) for i in range(3)}
    for k, v in objs.items():
        c.put_object(Bucket=target.bucket, Key=k, Body=v)
    a, b, d = list(objs)
    with target.raw() as conn:
        # sequential requests on one connection
        for k in (a, b):
            conn.send(signed_request(target, "GET", k).head_bytes())
            r = conn.read_response()
            assert r.status == 200 and r.body == objs[k]
            assert (r.header("Connection") or "").lower() != "close"
        # pipelined: four requests written at once, answers must come back in order
        batch = [("GET", d), ("HEAD", a), ("GET", obj_key + "-missing"), ("GET", b)]
        conn.send(b"".join(signed_request(target, m, k).head_bytes() for m, k in batch))
        rs = [conn.read_response(m) for m, _ in batch]
        assert rs[0].status == 200 and rs[0].body == objs[d]
        assert rs[1].status == 200 and rs[1].body == b""
        assert rs[1].header("Content-Length") == str(len(objs[a]))
        assert rs[2].status == 404 and rs[2].xml_code() == "NoSuchKey"
        assert rs[3].status == 200 and rs[3].body == objs[b]
        # a pipelined PUT with a body followed by a GET of the same key
        new = random_bytes(5000)
        put = signed_request(target, "PUT", a, payload_hash=sha256_hex(new),
                              headers=[("Content-Length", str(len(new)))])
        conn.send(put.head_bytes() + new + signed_request(target, "GET", a).head_bytes())
        assert conn.read_response("PUT").status == 200
        g = conn.read_response()
        assert g.status == 200 and g.body == new
        assert conn.pending_bytes(0.3) == b""
