"""Authentication, HTTPS/mTLS, certificate reload and the audit line against
the real binary, with certificates made by openssl, curl and Taquito's
RemoteSigner as clients, and the shared authentication vector."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

import tzcrypto
import tzkms_harness as h

HERE = Path(__file__).resolve().parent
AUTH = h.load_vectors("signatures.json")["authentication"][0]
BOOTSTRAP1 = h.vector_key("bootstrap1")
ATTESTATION = h.payload("tezt-attestation")["hex"]
TIMEOUT = 30.0


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Pki:
    """A server CA, a client CA and certificates issued by them (openssl)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.make_ca("server-ca")
        self.make_ca("client-ca")
        self.make_ca("rogue-ca")
        self.issue("server", "server-ca", server=True)
        self.issue("baker", "client-ca")
        self.issue("intruder", "rogue-ca")

    def path(self, name: str) -> str:
        return str(self.root / name)

    def make_ca(self, name: str) -> None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path(f"{name}.key"), "-out", self.path(f"{name}.pem"),
                "-days", "2", "-subj", f"/CN=tzkms e2e {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, ca: str, server: bool = False) -> None:
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path(f"{name}.key"), "-out", self.path(f"{name}.csr"), "-subj", f"/CN={name}")
        ext = self.root / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                       else "extendedKeyUsage=clientAuth\n")
        openssl("x509", "-req", "-in", self.path(f"{name}.csr"), "-CA", self.path(f"{ca}.pem"),
                "-CAkey", self.path(f"{ca}.key"), "-CAcreateserial", "-days", "2",
                "-out", self.path(f"{name}.pem"), "-extfile", str(ext))
        os.chmod(self.path(f"{name}.key"), 0o600)


class JsonServer:
    """tzkms serve with --log-format json, stderr read line by line (never slept for)."""

    def __init__(self, data_dir: Path, config: str):
        self.config_path = data_dir.with_name(data_dir.name + ".toml")
        self.config_path.write_text(config)
        self.proc = subprocess.Popen(
            [str(h.tzkms_bin()), "--log-format", "json", "serve", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k != "TZKMS_KEY_PASSWORD"})
        h._live.append(self.proc)
        self.logs: queue.Queue = queue.Queue()
        self.stdout: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.logs), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True).start()
        self.urls = {}
        while "http" not in self.urls or ("tls" in config and "https" not in self.urls):
            line = self.stdout.get(timeout=TIMEOUT)
            assert line is not None, "tzkms serve exited before listening"
            m = re.match(r"^listening on ((https?)://127\.0\.0\.1:\d+)$", line)
            if m:
                self.urls[m.group(2)] = m.group(1)

    @staticmethod
    def _pump(stream, q):
        for raw in stream:
            q.put(raw.decode(errors="replace").rstrip("\n"))
        q.put(None)

    def wait_for_log(self, predicate) -> dict:
        """The next JSON log event matching predicate (events before it are consumed)."""
        while True:
            line = self.logs.get(timeout=TIMEOUT)
            assert line is not None, "tzkms exited"
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if predicate(event):
                return event

    def audit(self) -> dict:
        return self.wait_for_log(lambda e: e.get("target") == "tzkms::audit")["fields"]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(keys, config: str) -> JsonServer:
        data_dir = tmp_path / f"data{len(started)}"
        data_dir.mkdir(mode=0o700)
        for k in keys:
            h.import_key(data_dir, k["sk"])
        s = JsonServer(data_dir, config)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            assert s.stop() == 0


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, text=True, timeout=60)


def post_args(payload_hex: str) -> list[str]:
    return ["-X", "POST", "-H", "Content-Type: application/json", "--data", json.dumps(payload_hex)]


def taquito(url: str, pkh: str, payload_hex: str, ca: str | None) -> dict:
    env = dict(os.environ)
    if ca:
        env["NODE_EXTRA_CA_CERTS"] = ca
    r = subprocess.run(["node", str(HERE / "tls_client.mjs"), url, pkh, payload_hex],
                       capture_output=True, text=True, timeout=120, env=env, cwd=HERE)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- authentication

def auth_config(extra: str = "") -> str:
    return f'[auth]\nrequired = true\nauthorized_keys = ["{AUTH["authorized_key"]["pk"]}"]\n{extra}'


def test_authentication_vector_over_http_and_each_failure(serve):
    s = serve([BOOTSTRAP1], auth_config())
    url = s.urls["http"]
    r = h.request(f"{url}/authorized_keys")
    assert r.status == 200 and r.json() == {"authorized_keys": [AUTH["authorized_key"]["pkh"]]}
    read = s.audit()
    assert (read["route"], read["decision"], read["status"]) == ("authorized_keys", "served", 200), read
    path, query = AUTH["request"]["path"], AUTH["request"]["query"]
    body = AUTH["request"]["body"].encode()
    hdr = {"Content-Type": "application/json"}

    ok = h.request(f"{url}{path}?authentication={query['authentication']}&version={query['version']}",
                   "POST", body, hdr)
    assert ok.status == 200, ok.body
    tzcrypto.verify(BOOTSTRAP1["pk"], ok.json()["signature"], bytes.fromhex(AUTH["data_hex"]), version=2)
    audit = s.audit()
    assert audit["auth_key"] == AUTH["authorized_key"]["pkh"] and audit["decision"] == "signed", audit

    missing = h.request(f"{url}{path}?version=2", "POST", body, hdr)
    assert missing.status == 401 and "authentication required" in missing.json()[0]["msg"]
    assert s.audit()["status"] == 401

    tampered_body = json.dumps(AUTH["data_hex"][:-2] + "00").encode()
    bad = h.request(f"{url}{path}?authentication={query['authentication']}&version=2", "POST", tampered_body, hdr)
    assert bad.status == 403 and "does not verify" in bad.json()[0]["msg"], bad.body

    sig = query["authentication"]
    flipped = sig[:20] + ("A" if sig[20] != "A" else "B") + sig[21:]
    bad = h.request(f"{url}{path}?authentication={flipped}&version=2", "POST", body, hdr)
    assert bad.status == 403, bad.body


def test_authentication_binding_refuses_other_keys(serve):
    other = h.vector_key("bootstrap2")
    s = serve([BOOTSTRAP1], auth_config(f'[auth.may_sign]\n{AUTH["authorized_key"]["pkh"]} = ["{other["pkh"]}"]\n'))
    query = AUTH["request"]["query"]
    r = h.request(f"{s.urls['http']}{AUTH['request']['path']}?authentication={query['authentication']}&version=2",
                  "POST", AUTH["request"]["body"].encode(), {"Content-Type": "application/json"})
    assert r.status == 403 and "auth.may_sign" in r.json()[0]["msg"], r.body


def test_taquito_remote_signer_without_authentication_support_gets_401(serve):
    # Taquito's RemoteSigner (21.0.0, the latest) sends no `authentication`: with auth required it is
    # refused, and Taquito reports the 401.
    s = serve([BOOTSTRAP1], auth_config())
    out = taquito(s.urls["http"], BOOTSTRAP1["pkh"], ATTESTATION, None)
    assert out.get("status") == 401, out


# ---------------------------------------------------------------- HTTPS, mTLS, reload

def tls_config(pki: Pki, mtls: bool, extra: str = "") -> str:
    client_ca = f'client_ca = "{pki.path("client-ca.pem")}"\n' if mtls else ""
    return (f'[server.tls]\nlisten = ["127.0.0.1:0"]\ncertificate = "{pki.path("server.pem")}"\n'
            f'private_key = "{pki.path("server.key")}"\n{client_ca}{extra}')


def test_https_with_curl_and_taquito_trusting_the_test_ca(serve, pki):
    s = serve([BOOTSTRAP1], tls_config(pki, mtls=False))
    https = s.urls["https"]
    r = curl("--cacert", pki.path("server-ca.pem"), f"{https}/keys/{BOOTSTRAP1['pkh']}")
    assert r.returncode == 0 and json.loads(r.stdout) == {"public_key": BOOTSTRAP1["pk"]}, r.stderr
    # Without the CA, curl refuses the server.
    r = curl(f"{https}/keys/{BOOTSTRAP1['pkh']}")
    assert r.returncode != 0
    out = taquito(https, BOOTSTRAP1["pkh"], ATTESTATION, pki.path("server-ca.pem"))
    assert out.get("public_key") == BOOTSTRAP1["pk"], out
    tzcrypto.verify(BOOTSTRAP1["pk"], out["signature"], bytes.fromhex(ATTESTATION))
    # Without trusting the CA, Taquito cannot connect.
    out = taquito(https, BOOTSTRAP1["pkh"], ATTESTATION, None)
    assert "error" in out, out
    # Plain HTTP is served side by side.
    assert h.request(f"{s.urls['http']}/keys/{BOOTSTRAP1['pkh']}").status == 200


def test_mtls_with_curl_right_and_wrong_certificates(serve, pki):
    s = serve([BOOTSTRAP1], tls_config(pki, mtls=True) +
              f'[policy.keys.{BOOTSTRAP1["pkh"]}]\ntls_clients = ["cn:baker"]\n')
    https = s.urls["https"]
    ca = ("--cacert", pki.path("server-ca.pem"))
    signed = curl(*ca, "--cert", pki.path("baker.pem"), "--key", pki.path("baker.key"),
                  *post_args(ATTESTATION), f"{https}/keys/{BOOTSTRAP1['pkh']}?version=3")
    assert signed.returncode == 0 and "signature" in json.loads(signed.stdout), signed.stdout + signed.stderr
    audit = s.audit()
    assert audit["tls_client_cn"] == "baker" and audit["tls_client"].startswith("sha256:"), audit
    assert audit["rule"] == f"policy.keys.{BOOTSTRAP1['pkh']}.allow"
    # A certificate from another CA, or none: no TLS session, nothing signed.
    wrong = curl(*ca, "--cert", pki.path("intruder.pem"), "--key", pki.path("intruder.key"),
                 f"{https}/keys/{BOOTSTRAP1['pkh']}")
    assert wrong.returncode != 0, wrong.stdout
    none = curl(*ca, f"{https}/keys/{BOOTSTRAP1['pkh']}")
    assert none.returncode != 0, none.stdout
    # Taquito cannot present a client certificate: refused at the handshake.
    out = taquito(https, BOOTSTRAP1["pkh"], ATTESTATION, pki.path("server-ca.pem"))
    assert "error" in out, out
    # The key is bound to the "baker" client: plain HTTP gets 403.
    r = h.request(f"{s.urls['http']}/keys/{BOOTSTRAP1['pkh']}?version=3", "POST",
                  json.dumps(ATTESTATION).encode(), {"Content-Type": "application/json"})
    assert r.status == 403 and "tls_clients" in r.json()[0]["msg"], r.body


def test_sighup_reloads_the_certificate_on_the_same_listener(serve, pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki.path("server.pem"), live / "server.pem")
    shutil.copy(pki.path("server.key"), live / "server.key")
    os.chmod(live / "server.key", 0o600)
    config = (f'[server.tls]\nlisten = ["127.0.0.1:0"]\ncertificate = "{live / "server.pem"}"\n'
              f'private_key = "{live / "server.key"}"\n')
    s = serve([BOOTSTRAP1], config)
    https = s.urls["https"]
    renewed = Pki(tmp_path / "renewed")
    assert curl("--cacert", pki.path("server-ca.pem"), f"{https}/authorized_keys").returncode == 0
    assert curl("--cacert", renewed.path("server-ca.pem"), f"{https}/authorized_keys").returncode != 0

    shutil.copy(renewed.path("server.pem"), live / "server.pem")
    shutil.copy(renewed.path("server.key"), live / "server.key")
    s.proc.send_signal(signal.SIGHUP)
    # A reload logs that it starts, then what it applied; the outcome line is the TLS one or a failure.
    outcome = lambda e: e.get("fields", {}).get("message", "").startswith(
        ("SIGHUP: TLS certificate reloaded", "SIGHUP: reload failed"))
    event = s.wait_for_log(outcome)
    assert event["fields"]["message"] == "SIGHUP: TLS certificate reloaded", event

    assert curl("--cacert", renewed.path("server-ca.pem"), f"{https}/authorized_keys").returncode == 0
    assert curl("--cacert", pki.path("server-ca.pem"), f"{https}/authorized_keys").returncode != 0

    # A broken certificate file: the reload fails and the served certificate stays.
    (live / "server.pem").write_text("garbage")
    s.proc.send_signal(signal.SIGHUP)
    event = s.wait_for_log(outcome)
    assert "reload failed" in event["fields"]["message"], event
    assert curl("--cacert", renewed.path("server-ca.pem"), f"{https}/authorized_keys").returncode == 0


# ---------------------------------------------------------------- audit line

def test_audit_line_fields_and_payload_logging(serve):
    s = serve([BOOTSTRAP1], f'[policy.keys.{BOOTSTRAP1["pkh"]}]\nallow = ["attestation", "transaction"]\n'
                            'log_payloads = true\n')
    url = s.urls["http"]
    operation = h.payload("sig-req-operation")["hex"]
    h.sign(_as_server(s), BOOTSTRAP1["pkh"], operation)
    line = s.audit()
    assert line["route"] == "sign" and line["client"].startswith("127.0.0.1:")
    assert line["pkh"] == BOOTSTRAP1["pkh"] and line["kind"] == "generic operation"
    assert line["operations"] == "transaction" and line["decision"] == "signed" and line["status"] == 200
    assert line["payload_blake2b"] == h.payload("sig-req-operation")["expected"]["blake2b_256"]
    assert line["payload"] == operation
    assert isinstance(line["latency_us"], int)

    r = h.request(f"{url}/keys/{BOOTSTRAP1['pkh']}?version=3", "POST", json.dumps(ATTESTATION).encode(),
                  {"Content-Type": "application/json"})
    assert r.status == 200
    line = s.audit()
    assert (line["kind"], line["chain"], line["level"], line["round"]) == (
        "attestation", "NetXdQprcVkpaWU", h.payload("tezt-attestation")["expected"]["level"],
        h.payload("tezt-attestation")["expected"]["round"])

    r = h.request(f"{url}/keys/{BOOTSTRAP1['pkh']}?version=3", "POST", json.dumps("05" + "00" * 8).encode(),
                  {"Content-Type": "application/json"})
    assert r.status == 403
    line = s.audit()
    assert line["decision"] == "refused" and line["rule"] == f"policy.keys.{BOOTSTRAP1['pkh']}.allow"
    assert "may not sign michelson_data" in line["reason"]
    assert s.stop() == 0


def _as_server(s: JsonServer) -> h.Server:
    m = re.match(r"http://127\.0\.0\.1:(\d+)", s.urls["http"])
    return h.Server(proc=s.proc, url=s.urls["http"], port=int(m.group(1)), data_dir=Path("."),
                    stderr_path=Path("/dev/null"))
