#!/usr/bin/env python3
"""bench/accuracy.py — the accuracy check of bench/cases/accuracy.sh: bursts at a limiter, and
how many admissions it let into any window, placed by their arrival at the origin.

Owns: the burst sender (asyncio, keep-alive connections, every request numbered in an
X-Bench-Seq header and its send time recorded just before it is written) and the analysis of
its log against the origin's arrival log (nginx `$msec $http_x_bench_seq $status`). Must not
touch: anything but its sockets to the given URL and the files it is given.

  send --url URL --keys K1,K2 --burst 30 --every 0.9 --duration 8 --out CLIENT.jsonl
  analyse --client CLIENT.jsonl --origin ORIGIN.log --limit 10 --window 1   → key=value lines

The certain criterion: a set of admissions is over the limit
only if every one of them was sent after the window opened and reached the origin before it
closed — then the limiter let them all through inside that window, whatever the jitter of the
responses. Send times are taken before the write (so the true send is no earlier), arrival
times are nginx's millisecond clock plus 2 ms (its time is truncated to the millisecond and
cached per event-loop turn), so every slack errs towards "not over".
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.parse


def request(path, host, key, seq):
    auth = ("AWS4-HMAC-SHA256 Credential=%s/20261123/garage/s3/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=%s" % (key, "0" * 64))
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\nx-amz-date: 20261123T000000Z\r\n"
            "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nX-Bench-Seq: %d\r\n\r\n"
            % (path, host, auth, seq)).encode()


async def read_response(reader):
    """(status, keep-alive) of one response; its body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value:
            raise ValueError("chunked responses are not expected from the bench origin")
    if length:
        await reader.readexactly(length)
    return status, not close


class Conn:
    def __init__(self, host, port):
        self.host, self.port, self.rw = host, port, None

    async def exchange(self, data):
        """Send one request (reconnecting first if needed); (send time, status, response time)."""
        if self.rw is None:
            self.rw = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.rw
        sent = time.time()
        writer.write(data)
        try:
            status, keep = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.rw = None
            return sent, 0, time.time()
        if not keep:
            writer.close()
            self.rw = None
        return sent, status, time.time()


async def key_bursts(key, conns, a, offset, host, t0, out, seq):
    """Bursts of len(conns) requests for one key, every a.every seconds from t0 + offset."""
    k = 0
    while True:
        at = t0 + offset + k * a.every
        if at >= t0 + a.duration:
            return
        await asyncio.sleep(max(0.0, at - time.time()))
        reqs = []
        for c in conns:
            seq[0] += 1
            reqs.append((seq[0], c.exchange(request(a.path, host, key, seq[0]))))
        for n, (sent, status, done) in zip([s for s, _ in reqs],
                                           await asyncio.gather(*(f for _, f in reqs))):
            out.append({"seq": n, "key": key, "burst": k, "sent": sent, "status": status,
                        "done": done})
        k += 1


async def send(a):
    u = urllib.parse.urlsplit(a.url)
    a.path = u.path or "/"
    keys = a.keys.split(",")
    conns = {k: [Conn(u.hostname, u.port) for _ in range(a.burst)] for k in keys}
    out, seq = [], [0]
    t0 = time.time() + 0.5
    await asyncio.gather(*(key_bursts(k, conns[k], a, i * a.every / len(keys), u.netloc, t0, out, seq)
                           for i, k in enumerate(keys)))
    with open(a.out, "w") as f:
        for r in sorted(out, key=lambda r: r["seq"]):
            f.write(json.dumps(r) + "\n")


def most_in_window(times, window):
    """Most of the sorted times inside any half-open window [t, t + window)."""
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


def certain(adm, window, limit):
    """(most admissions certainly inside one window, windows that certainly held more than limit)
    over admissions (sent, arrival_upper); windows open at each send time."""
    best, over = 0, 0
    for s_open, _ in adm:
        n = sum(1 for s, arr in adm if s >= s_open and arr <= s_open + window)
        best = max(best, n)
        over += n > limit
    return best, over


def exact_admits(sends, window, limit):
    """What an exact trailing-window limiter admits of these send times (denials not counted)."""
    admitted = []
    for t in sorted(sends):
        if sum(1 for x in admitted if x > t - window) < limit:
            admitted.append(t)
    return len(admitted)


def analyse(a):
    client = [json.loads(l) for l in open(a.client) if l.strip()]
    arrivals = {}
    for line in open(a.origin):
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            arrivals[int(f[1])] = float(f[0]) + 0.002
    res = {"limit": a.limit, "window_s": a.window, "sent": len(client), "admitted": 0,
           "denied": 0, "other": 0, "unmatched": 0, "max_certain": 0, "over_windows_certain": 0,
           "max_by_arrival": 0, "max_by_response": 0, "exact_admitted": 0}
    for key in sorted({r["key"] for r in client}):
        rs = [r for r in client if r["key"] == key]
        ok = [r for r in rs if 200 <= r["status"] < 300]
        res["admitted"] += len(ok)
        res["denied"] += sum(1 for r in rs if r["status"] in (429, 503))
        res["other"] += sum(1 for r in rs if not (200 <= r["status"] < 300 or r["status"] in (429, 503)))
        matched = [(r["sent"], arrivals[r["seq"]]) for r in ok if r["seq"] in arrivals]
        res["unmatched"] += len(ok) - len(matched)
        best, over = certain(sorted(matched), a.window, a.limit)
        res["max_certain"] = max(res["max_certain"], best)
        res["over_windows_certain"] += over
        res["max_by_arrival"] = max(res["max_by_arrival"],
                                    most_in_window(sorted(arr for _, arr in matched), a.window))
        res["max_by_response"] = max(res["max_by_response"],
                                     most_in_window(sorted(r["done"] for r in ok), a.window))
        res["exact_admitted"] += exact_admits([r["sent"] for r in rs], a.window, a.limit)
    for k, v in res.items():
        print("%s=%s" % (k, v))


def main():
    p = argparse.ArgumentParser(prog="accuracy.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--url", required=True)
    s.add_argument("--keys", required=True)
    s.add_argument("--burst", type=int, default=30)
    s.add_argument("--every", type=float, default=0.9)
    s.add_argument("--duration", type=float, default=8)
    s.add_argument("--out", required=True)
    an = sub.add_parser("analyse")
    an.add_argument("--client", required=True)
    an.add_argument("--origin", required=True)
    an.add_argument("--limit", type=int, required=True)
    an.add_argument("--window", type=float, default=1.0)
    a = p.parse_args()
    if a.cmd == "send":
        asyncio.run(send(a))
    else:
        analyse(a)


if __name__ == "__main__":
    sys.exit(main())
