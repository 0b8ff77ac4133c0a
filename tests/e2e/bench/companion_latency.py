"""Latency of a tz4 attestation signed once (consensus key) and twice in sequence (consensus key, then
its companion key on the identical tag-41 bytes), over HTTP against the release binary on loopback.

Each signature is what octez-client does: a new connection for GET /authorized_keys, then POST
/keys/<pkh>?version=3. Run: TZKMS_BIN=target/release/tzkms python3 tests/e2e/bench/companion_latency.py [N]
Prints p50/p99 in milliseconds. A measurement tool, not a test.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("TZKMS_BIN", "target/release/tzkms")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    assert r.status == 200, (r.status, data)
    return data


def sign(port, pkh, payload):
    call(port, "GET", "/authorized_keys")
    call(port, "POST", f"/keys/{pkh}?version=3", json.dumps(payload.hex()).encode())


def attestation(level):
    # 0x13, mainnet chain id, branch, tag 41, level, round 0, block payload hash: 78 bytes.
    return (bytes([0x13, 0x7A, 0x06, 0xA7, 0x70]) + b"\x11" * 32 + bytes([41])
            + level.to_bytes(4, "big") + (0).to_bytes(4, "big") + b"\x22" * 32)


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, TZKMS_LOG="warn")
        pkhs = []
        for alias in ("consensus", "companion"):
            out = subprocess.run([BIN, "--data-dir", data, "keys", "generate", "--curve", "bls",
                                  "--alias", alias], check=True, capture_output=True, text=True, env=env)
            pkhs.append(next(w for w in out.stdout.split() if w.startswith("tz4")))
        port = free_port()
        server = subprocess.Popen([BIN, "--data-dir", data, "serve", "--listen", f"127.0.0.1:{port}",
                                   "--metrics-listen", f"127.0.0.1:{free_port()}"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    call(port, "GET", "/authorized_keys")
                    break
                except OSError:
                    time.sleep(0.05)  # waiting for the server to listen; not a measurement
            one, two = [], []
            level = 1_000
            for i in range(2 * N + 40):
                level += 1
                payload = attestation(level)
                start = time.perf_counter()
                sign(port, pkhs[0], payload)
                first = time.perf_counter()
                if i % 2:
                    sign(port, pkhs[1], payload)
                end = time.perf_counter()
                if i < 40:
                    continue  # warm-up
                if i % 2:
                    two.append((end - start) * 1000)
                else:
                    one.append((first - start) * 1000)
            for name, xs in (("one signature (consensus key)", one),
                             ("two sequential signatures (consensus, companion)", two)):
                print(f"{name}: n={len(xs)} p50={statistics.median(xs):.2f} ms p99={pct(xs, 99):.2f} ms")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
