"""The exact HTTP sequence octez-client uses, sent with curl itself.

octez-client (HTTP signer backend) fetches the public key once at import
(GET /keys/<pkh>), then for every signature calls GET /authorized_keys (which
must answer exactly {} when no authentication is required) and
POST /keys/<pkh>?version=3 with Content-Type: application/json and a JSON
string of hex; it then verifies the returned signature itself.
"""

import json
import os
import shutil
import subprocess

import pytest

import tzcrypto
import tzkms_harness as h

KEY_IDS = ["bootstrap1", "hardcoded_secp256k1", "hardcoded_p256", "bls_test_account"]
CURL = shutil.which("curl")

pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def curl(*args: str) -> tuple[int, dict, bytes]:
    """Runs curl; returns (status, headers, body)."""
    r = subprocess.run(
        [CURL, "-sS", "--max-time", "30", "-D", "-", "-o", "/dev/stdout", *args],
        capture_output=True, timeout=60, check=False)
    assert r.returncode == 0, f"curl {args} failed: {r.stderr.decode()}"
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


@pytest.fixture(scope="module")
def octez(launch):
    return launch([h.vector_key(i) for i in KEY_IDS], config=h.GENERIC_UNCHECKED)


def _consensus_payload(key):
    # tz4 bakers sign BLS-mode (tag 40) preattestations; others tag 20.
    pid = "tezt-bls-mode-preattestation" if key["pkh"].startswith("tz4") else "tezt-preattestation"
    return h.payload(pid)["hex"]


@pytest.mark.parametrize("key_id", KEY_IDS)
def test_octez_client_sequence(octez, key_id):
    k = h.vector_key(key_id)
    base = octez.url

    # 1. import secret key alias http://host:port/<pkh> -> GET /keys/<pkh>
    status, headers, body = curl(f"{base}/keys/{k['pkh']}")
    assert status == 200, body
    assert headers.get("content-type", "").startswith("application/json")
    assert json.loads(body) == {"public_key": k["pk"]}

    for hex_payload in (_consensus_payload(k), "03" + os.urandom(32).hex() + "ee" + os.urandom(27).hex()):
        # 2. GET /authorized_keys -> exactly {}
        status, headers, body = curl(f"{base}/authorized_keys")
        assert status == 200, body
        assert headers.get("content-type", "").startswith("application/json")
        assert body.strip() == b"{}", f"authorized_keys answered {body!r}"
        assert json.loads(body) == {}

        # 3. POST /keys/<pkh>?version=3, JSON string of hex
        status, headers, body = curl(
            "-X", "POST", "-H", "Content-Type: application/json",
            "--data-binary", json.dumps(hex_payload), f"{base}/keys/{k['pkh']}?version=3")
        assert status == 200, body
        assert headers.get("content-type", "").startswith("application/json")
        answer = json.loads(body)
        assert set(answer) == {"signature"}, answer

        # 4. the client verifies the signature against the public key
        tzcrypto.verify(k["pk"], answer["signature"], bytes.fromhex(hex_payload), 3)


def test_unknown_query_parameters_are_ignored(octez):
    k = h.vector_key("bootstrap1")
    hex_payload = "03" + os.urandom(32).hex()
    status, _, body = curl(
        "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
        json.dumps(hex_payload), f"{octez.url}/keys/{k['pkh']}?version=3&foo=bar&x=")
    assert status == 200, body
    sig = json.loads(body)["signature"]
    tzcrypto.verify(k["pk"], sig, bytes.fromhex(hex_payload))
    assert sig == tzcrypto.local_signature(k["sk"], bytes.fromhex(hex_payload))
