"""Helpers for the pytest end-to-end suites: run the real tzkms binary.

Keys are imported into temporary data directories with `tzkms keys import`,
servers are started with `tzkms serve --listen 127.0.0.1:0` and their port is
read from the `listening on http://127.0.0.1:PORT` line (never slept for), and
they are stopped with SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
# signer -> e2e -> tests -> repository root
REPO_ROOT = HERE.parents[2]
VECTORS_DIR = Path(os.environ.get("TZKMS_VECTORS", REPO_ROOT.parent / "shared" / "vectors")).resolve()

# For suites that test something else than the policy (curves, schemes, encryption, the CLI, bad
# input) and sign random 0x03 bytes: the default policy signs consensus payloads only, so their
# servers allow undecoded generic operations explicitly.
GENERIC_UNCHECKED = ('[policy.default]\n'
                     'allow = ["block", "preattestation", "attestation", "generic_unchecked"]\n')

STARTUP_TIMEOUT = float(os.environ.get("TZKMS_STARTUP_TIMEOUT", "30"))
COMMAND_TIMEOUT = 60.0
HTTP_TIMEOUT = 30.0


def tzkms_bin() -> Path:
    env = os.environ.get("TZKMS_BIN")
    if env:
        return Path(env).resolve()
    release = REPO_ROOT / "target" / "release" / "tzkms"
    debug = REPO_ROOT / "target" / "debug" / "tzkms"
    return release if release.exists() or not debug.exists() else debug


_vector_cache: dict[str, dict] = {}


def load_vectors(name: str) -> dict:
    if name not in _vector_cache:
        _vector_cache[name] = json.loads((VECTORS_DIR / name).read_text())
    return _vector_cache[name]


def vector_key(key_id: str) -> dict:
    keys = load_vectors("keys.json")
    for k in keys["well_known_keys"] + keys["other_keys"]:
        if k["id"] == key_id:
            return k
    raise KeyError(f"no key {key_id} in keys.json")


def payload(payload_id: str) -> dict:
    for p in load_vectors("payloads.json")["payloads"]:
        if p["id"] == payload_id:
            return p
    raise KeyError(f"no payload {payload_id} in payloads.json")


def run_tzkms(args: list[str], *, input: str = "", env: dict | None = None,
              timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("TZKMS_KEY_PASSWORD", None)
    full_env.update(env or {})
    return subprocess.run([str(tzkms_bin()), *args], input=input, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def import_key(data_dir: Path, sk: str, *, password: str | None = None,
               alias: str | None = None, never_signed: bool = True) -> str:
    """`tzkms keys import`; returns the pkh printed on stdout's first line.

    An imported key signs consensus only once something vouches for its past: with `never_signed`
    (these test keys signed nothing before), `tzkms watermark floor <pkh> --level 0` does."""
    args = ["keys", "import", "--data-dir", str(data_dir)]
    if alias:
        args += ["--alias", alias]
    env = {} if password is None else {"TZKMS_KEY_PASSWORD": password}
    r = run_tzkms(args, input=sk + "\n", env=env)
    if r.returncode != 0:
        raise AssertionError(f"tzkms {' '.join(args)} exited {r.returncode}\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    lines = r.stdout.splitlines()
    assert lines, f"tzkms keys import printed nothing on stdout (stderr: {r.stderr})"
    pkh = lines[0].strip()
    if never_signed:
        floor = ["watermark", "floor", pkh, "--level", "0", "--data-dir", str(data_dir)]
        f = run_tzkms(floor)
        assert f.returncode == 0, f"tzkms {' '.join(floor)}: {f.stderr}"
    return pkh


LISTENING = re.compile(r"^listening on (http://127\.0\.0\.1:(\d+))\s*$")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    port: int
    data_dir: Path
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; returns the exit code (SIGKILL and raise on timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"tzkms serve did not exit within {timeout}s of SIGTERM")
        return self.proc.returncode


def start_server(data_dir: Path, *, env: dict | None = None, extra_args: tuple = (),
                 timeout: float = STARTUP_TIMEOUT, config: str | None = None) -> Server:
    """config: TOML text written beside the data directory and passed with --config."""
    if config is not None:
        path = data_dir.with_name(data_dir.name + ".toml")
        path.write_text(config)
        extra_args = (*extra_args, "--config", str(path))
    full_env = dict(os.environ)
    full_env.pop("TZKMS_KEY_PASSWORD", None)
    full_env.update(env or {})
    stderr_path = Path(tempfile.mkstemp(prefix="tzkms-serve-", suffix=".stderr")[1])
    stderr_file = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [str(tzkms_bin()), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
         *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file, env=full_env,
    )
    stderr_file.close()
    lines: queue.Queue = queue.Queue()
    stdout_lines: list[str] = []

    def pump() -> None:
        # Keep draining stdout for the server's whole life so it never blocks.
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(remaining, 0.001))
        except queue.Empty:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"tzkms serve printed no 'listening on' line within {timeout}s\n"
                f"stdout: {stdout_lines}\nstderr: {stderr_path.read_text(errors='replace')}")
        if line is None:
            proc.wait()
            raise AssertionError(
                f"tzkms serve exited ({proc.returncode}) before listening\n"
                f"stdout: {stdout_lines}\nstderr: {stderr_path.read_text(errors='replace')}")
        m = LISTENING.match(line)
        if m:
            _live.append(proc)
            return Server(proc=proc, url=m.group(1), port=int(m.group(2)), data_dir=data_dir,
                          stderr_path=stderr_path, stdout_lines=stdout_lines)


_live: list[subprocess.Popen] = []


def kill_leftovers() -> None:
    for proc in _live:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None, timeout: float = HTTP_TIMEOUT) -> Response:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def get_public_key(server: Server, pkh: str) -> str:
    r = request(f"{server.url}/keys/{pkh}")
    assert r.status == 200, f"GET /keys/{pkh}: {r.status} {r.body!r}"
    return r.json()["public_key"]


def sign(server: Server, pkh: str, hex_payload: str, version: int | None = 3,
         query: str = "") -> str:
    """POST /keys/<pkh>[?version=N] with a JSON string body; returns the signature."""
    q = [] if version is None else [f"version={version}"]
    if query:
        q.append(query)
    url = f"{server.url}/keys/{pkh}" + (f"?{'&'.join(q)}" if q else "")
    r = request(url, "POST", json.dumps(hex_payload).encode(),
                {"Content-Type": "application/json"})
    assert r.status == 200, f"POST {url} {hex_payload[:40]}...: {r.status} {r.body!r}"
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"signature"}, body
    return body["signature"]


def raw_exchange(port: int, head: bytes, body_chunks, timeout: float = HTTP_TIMEOUT) -> bytes:
    """Sends a raw HTTP request (head, then body chunks until the peer stops
    reading) and returns whatever response bytes arrive before close/timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    try:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                # The server stopped reading (e.g. it answered 413 early).
                break
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
            if b"\r\n\r\n" in received:
                head_part, _, rest = received.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head_part)
                if m and len(rest) >= int(m.group(1)):
                    break
    except socket.timeout:
        pass
    finally:
        s.close()
    return received


def make_data_dir(prefix: str = "tzkms-e2e-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
