"""Bad input over HTTP: each request gets the right 4xx with the Octez
error-list JSON body, and the server keeps serving valid requests after it."""

import json
import os
import shutil
import subprocess

import pytest

import tzcrypto
import tzkms_harness as h

TZ1 = h.vector_key("bootstrap1")
UNSERVED_TZ1 = h.vector_key("bootstrap2")["pkh"]  # a valid tz1 the server does not hold
JSON_HEADERS = {"Content-Type": "application/json"}
OVERSIZE = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def bad(launch):
    return launch([TZ1, h.vector_key("hardcoded_p256")], config=h.GENERIC_UNCHECKED)


def assert_error_list(r: h.Response, status: int, what: str) -> None:
    assert r.status == status, f"{what}: expected HTTP {status}, got {r.status} {r.body[:300]!r}"
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"{what}: content-type {ctype!r}"
    try:
        body = json.loads(r.body)
    except ValueError as e:
        raise AssertionError(f"{what}: error body is not JSON: {r.body[:300]!r}") from e
    assert isinstance(body, list) and body, f"{what}: error body is not a non-empty list: {body!r}"
    for err in body:
        assert isinstance(err, dict), body
        assert isinstance(err.get("kind"), str) and isinstance(err.get("id"), str), body
        assert isinstance(err.get("msg"), str) and err["msg"], body


def assert_still_serving(signer) -> None:
    # Fresh bytes each time, with a tag no protocol defines after the branch: a random tag byte would
    # sometimes name an operation tzkms never signs (an attestation, an anonymous operation).
    message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(15)
    sig = h.sign(signer.server, TZ1["pkh"], message.hex(), version=3)
    tzcrypto.verify(TZ1["pk"], sig, message)
    assert signer.server.alive()


def post(signer, body: bytes | None, pkh: str = TZ1["pkh"], headers=JSON_HEADERS):
    return h.request(f"{signer.url}/keys/{pkh}?version=3", "POST", body, headers)


def _truncated(pid: str, length: int) -> str:
    hex_payload = h.payload(pid)["hex"]
    assert len(hex_payload) // 2 > length
    return hex_payload[: 2 * length]


BAD_BODIES = {
    "malformed JSON (unterminated string)": b'"031234',
    "malformed JSON (not JSON)": b"031234",
    "malformed JSON (object)": b'{"data":"031234"}',
    "malformed JSON (number)": b"31234",
    "non-hex string": b'"03zz12"',
    "hex with 0x prefix": b'"0x031234"',
    "odd-length hex": b'"031"',
    "empty body": b"",
    "empty JSON string": b'""',
    "truncated preattestation (50 bytes)": json.dumps(_truncated("tezt-preattestation", 50)).encode(),
    "truncated attestation (50 bytes)": json.dumps(_truncated("tezt-attestation", 50)).encode(),
    "truncated preattestation (42 bytes, no round)": json.dumps(_truncated("sig-req-preendorsement", 42)).encode(),
    "truncated BLS-mode attestation (40 bytes)": json.dumps(_truncated("tezt-bls-mode-attestation", 40)).encode(),
    "truncated block (100 bytes, inside the fitness)": json.dumps(_truncated("sig-req-block", 100)).encode(),
    "preattestation magic byte only": b'"12"',
    "block magic and chain id only": json.dumps(_truncated("sig-req-block", 5)).encode(),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_body_is_400(bad, name):
    r = post(bad, BAD_BODIES[name])
    assert_error_list(r, 400, name)
    assert_still_serving(bad)


@pytest.mark.parametrize("version", ["7", "-1", "abc", "3.0"])
def test_unsupported_version_is_400(bad, version):
    r = h.request(f"{bad.url}/keys/{TZ1['pkh']}?version={version}", "POST", b'"031234"',
                  JSON_HEADERS)
    assert_error_list(r, 400, f"version={version}")
    assert_still_serving(bad)


def test_no_body_and_no_content_type_is_400(bad):
    r = h.request(f"{bad.url}/keys/{TZ1['pkh']}", "POST", None, {})
    assert_error_list(r, 400, "POST with no body")
    assert_still_serving(bad)


def test_0x04_payload_is_403(bad):
    # The exact bytes an authentication signature covers: 04 01 || pkh || data.
    auth = h.load_vectors("signatures.json")["authentication"][0]
    for hex_payload in (auth["auth_bytes_hex"], "04" + os.urandom(40).hex(), "04"):
        r = post(bad, json.dumps(hex_payload).encode())
        assert_error_list(r, 403, f"0x04 payload {hex_payload[:12]}...")
        assert_still_serving(bad)


def test_unknown_pkh_is_404(bad):
    r = h.request(f"{bad.url}/keys/{UNSERVED_TZ1}")
    assert_error_list(r, 404, "GET /keys/<unserved tz1>")
    assert_still_serving(bad)
    r = post(bad, b'"031234"', pkh=UNSERVED_TZ1)
    assert_error_list(r, 404, "POST /keys/<unserved tz1>")
    assert_still_serving(bad)


MALFORMED_PKHS = {
    "garbage": "tz1invalid",
    "bad checksum": TZ1["pkh"][:-1] + ("a" if TZ1["pkh"][-1] != "a" else "b"),
    "a public key": TZ1["pk"],
    "a block hash": "BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2",
}


@pytest.mark.parametrize("name", list(MALFORMED_PKHS))
def test_malformed_pkh_is_400(bad, name):
    pkh = MALFORMED_PKHS[name]
    r = h.request(f"{bad.url}/keys/{pkh}")
    assert_error_list(r, 400, f"GET /keys/{pkh} ({name})")
    r = post(bad, b'"031234"', pkh=pkh)
    assert_error_list(r, 400, f"POST /keys/{pkh} ({name})")
    assert_still_serving(bad)


def test_oversized_body_is_413(bad):
    """10 MiB JSON body with Content-Length, sent by a plain client (no Expect)."""
    body = b'"03' + b"00" * ((OVERSIZE - 4) // 2) + b'"'
    head = (f"POST /keys/{TZ1['pkh']}?version=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    raw = h.raw_exchange(bad.server.port, head, chunks)
    assert raw, "no response at all to a 10 MiB body"
    status_line, _, rest = raw.partition(b"\r\n")
    head_part, _, resp_body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in head_part.decode(errors="replace").split("\r\n"):
        n, _, v = line.partition(":")
        headers[n.strip().lower()] = v.strip()
    status = int(status_line.split()[1])
    assert_error_list(h.Response(status, headers, resp_body), 413, "10 MiB body")
    assert_still_serving(bad)


def test_oversized_chunked_body_is_413(bad):
    """10 MiB streamed with chunked transfer encoding (no Content-Length)."""
    head = (f"POST /keys/{TZ1['pkh']}?version=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"Connection: close\r\n\r\n").encode()

    def chunks():
        yield b'4\r\n"030\r\n'
        piece = b"00" * 32768
        for _ in range(OVERSIZE // len(piece)):
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        yield b'1\r\n"\r\n0\r\n\r\n'

    raw = h.raw_exchange(bad.server.port, head, chunks())
    assert raw, "no response at all to a 10 MiB chunked body"
    status = int(raw.split(b"\r\n", 1)[0].split()[1])
    assert status == 413, raw[:300]
    assert_still_serving(bad)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_oversized_body_with_curl_is_413(bad, tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b'"03' + b"ab" * ((OVERSIZE - 4) // 2) + b'"')
    r = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "-o", str(tmp_path / "out"), "-w", "%{http_code}",
         "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", f"@{big}",
         f"{bad.url}/keys/{TZ1['pkh']}?version=3"],
        capture_output=True, timeout=90, check=False)
    assert r.stdout.decode() == "413", (r.stdout, r.stderr)
    body = json.loads((tmp_path / "out").read_bytes())
    assert isinstance(body, list) and body and "msg" in body[0]
    assert_still_serving(bad)


def test_many_bad_requests_then_good(bad):
    """Interleaves every bad request kind; the server answers each and survives."""
    for _ in range(3):
        for name, body in BAD_BODIES.items():
            assert post(bad, body).status == 400, name
        assert post(bad, b'"04aa"').status == 403
        assert post(bad, b'"031234"', pkh=UNSERVED_TZ1).status == 404
        assert post(bad, b'"031234"', pkh="tz1invalid").status == 400
    assert_still_serving(bad)
