"""Real S3 clients against Garage through tollgate's HTTPS listener (rustls).

The CA and the server certificate are made with openssl by the `certs` fixture; clients verify
against that CA only (boto3 verify=ca.pem, curl --cacert). Skipped only with TOLLGATE_DIRECT=1.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess

import pytest

from s3lib import RawConn, random_bytes, sha256_file, sha256_hex

MiB = 1024 * 1024


def _curl(*args, ca, port, timeout=60):
    return subprocess.run(["curl", "-sS", "--cacert", str(ca),
                           "--resolve", f"localhost:{port}:127.0.0.1", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_tls_certificate_is_verified(tls_target):
    # with the test CA: handshake OK, the server name is checked, an S3 answer comes back
    with tls_target.raw(timeout=10) as conn:
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.send(f"GET / HTTP/1.1\r\nHost: {tls_target.host_header}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        r = conn.read_response()
        assert 200 <= r.status < 500 and r.status not in (429,), r
    # without it: verification fails (so the clients below really check the chain)
    with pytest.raises(ssl.SSLCertVerificationError):
        RawConn(tls_target.port, host="127.0.0.1", timeout=10,
                tls=ssl.create_default_context(), server_hostname="localhost")


def test_tls_boto3_put_get_10mib(tls_target, obj_key):
    c = tls_target.client()
    data = random_bytes(10 * MiB)
    put = c.put_object(Bucket=tls_target.bucket, Key=obj_key, Body=data)
    assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    got = c.get_object(Bucket=tls_target.bucket, Key=obj_key)
    assert got["ContentLength"] == len(data)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)


def test_tls_multipart_20mib(tls_target, obj_key):
    c = tls_target.client()
    data = random_bytes(20 * MiB)
    upload_id = c.create_multipart_upload(Bucket=tls_target.bucket, Key=obj_key)["UploadId"]
    parts = []
    for n in range(4):
        r = c.upload_part(Bucket=tls_target.bucket, Key=obj_key, UploadId=upload_id,
                          PartNumber=n + 1, Body=data[n * 5 * MiB:(n + 1) * 5 * MiB])
        parts.append({"PartNumber": n + 1, "ETag": r["ETag"]})
    done = c.complete_multipart_upload(Bucket=tls_target.bucket, Key=obj_key,
                                       UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert done["ETag"].strip('"').endswith("-4")
    got = c.get_object(Bucket=tls_target.bucket, Key=obj_key)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)


def test_tls_presigned_curl(tls_target, obj_key, tmp_path):
    c = tls_target.client()
    data = random_bytes(2 * MiB + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    params = {"Bucket": tls_target.bucket, "Key": obj_key}
    put_url = c.generate_presigned_url("put_object", Params=params, ExpiresIn=300)
    assert put_url.startswith(f"https://localhost:{tls_target.port}/")
    p = _curl("-o", "/dev/null", "-w", "%{http_code}", "-T", src, put_url,
              ca=tls_target.ca, port=tls_target.port)
    assert p.stdout == "200", (p.stdout, p.stderr)
    get_url = c.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
    out = tmp_path / "out.bin"
    p = _curl("-o", out, "-w", "%{http_code}", get_url, ca=tls_target.ca, port=tls_target.port)
    assert p.stdout == "200", (p.stdout, p.stderr)
    assert sha256_file(out) == sha256_hex(data)
