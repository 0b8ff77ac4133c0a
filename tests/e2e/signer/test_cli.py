"""The tzkms CLI around the server: keys list/generate, default key on first
start, key file permissions, clean exit on SIGTERM."""

import json
import os
import re
import stat

import pytest

import tzcrypto
import tzkms_harness as h

PKH_RE = re.compile(r"\b(tz[1-4][1-9A-HJ-NP-Za-km-z]{33})\b")
CURVES = {"ed25519": "tz1", "secp256k1": "tz2", "p256": "tz3", "bls": "tz4"}


def _files(data_dir):
    return [p for p in data_dir.rglob("*") if p.is_file()]


def test_keys_list_json(tmp_path):
    ids = ["bootstrap1", "hardcoded_secp256k1", "hardcoded_p256", "bls_test_account"]
    for i in ids:
        assert h.import_key(tmp_path, h.vector_key(i)["sk"], alias=i) == h.vector_key(i)["pkh"]
    r = h.run_tzkms(["keys", "list", "--data-dir", str(tmp_path), "--json"])
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert isinstance(listed, list)
    by_pkh = {e["pkh"]: e for e in listed}
    assert set(by_pkh) == {h.vector_key(i)["pkh"] for i in ids}
    for i in ids:
        k = h.vector_key(i)
        assert by_pkh[k["pkh"]]["public_key"] == k["pk"]
        curve = by_pkh[k["pkh"]]["curve"].lower().replace("-", "").replace("_", "")
        assert curve.startswith(k["curve"]), (curve, k["curve"])


def test_imported_key_files_are_private(tmp_path):
    k = h.vector_key("hardcoded_p256")
    h.import_key(tmp_path, k["sk"])
    files = _files(tmp_path)
    assert files, "keys import wrote no file"
    holding = [p for p in files if k["sk"] in p.read_text(errors="replace")]
    for p in holding or files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} has mode {oct(mode)}, expected 0600"


@pytest.mark.parametrize("curve", list(CURVES))
def test_generate_then_sign(tmp_path, curve):
    r = h.run_tzkms(["keys", "generate", "--data-dir", str(tmp_path), "--curve", curve])
    assert r.returncode == 0, r.stderr
    pkhs = set(PKH_RE.findall(r.stdout))
    assert len(pkhs) == 1, f"expected one pkh in: {r.stdout}"
    pkh = pkhs.pop()
    assert pkh.startswith(CURVES[curve])
    assert re.search(rf"octez-client import secret key \S+ http://\S+/{pkh}\b", r.stdout), r.stdout
    for p in _files(tmp_path):
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, f"{p} is group/world accessible"

    server = h.start_server(tmp_path, config=h.GENERIC_UNCHECKED)
    try:
        pk = h.get_public_key(server, pkh)
        message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(7)
        for version in (3, 1):
            sig = h.sign(server, pkh, message.hex(), version=version)
            tzcrypto.verify(pk, sig, message, version)
    finally:
        assert server.stop() == 0


def test_generate_encrypted_key(tmp_path):
    env = {"TZKMS_KEY_PASSWORD": "e2e-password"}
    r = h.run_tzkms(["keys", "generate", "--data-dir", str(tmp_path), "--curve", "p256",
                     "--encrypt"], env=env)
    assert r.returncode == 0, r.stderr
    pkh = PKH_RE.findall(r.stdout)[0]
    assert not any("p2sk" in p.read_text(errors="replace") for p in _files(tmp_path)), \
        "an --encrypt key is stored in clear"
    server = h.start_server(tmp_path, env=env, config=h.GENERIC_UNCHECKED)
    try:
        pk = h.get_public_key(server, pkh)
        message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(7)
        tzcrypto.verify(pk, h.sign(server, pkh, message.hex()), message)
    finally:
        assert server.stop() == 0


def test_first_start_generates_a_p256_key(tmp_path):
    data_dir = tmp_path / "fresh"
    data_dir.mkdir(mode=0o700)
    server = h.start_server(data_dir, config=h.GENERIC_UNCHECKED)
    try:
        r = h.run_tzkms(["keys", "list", "--data-dir", str(data_dir), "--json"])
        assert r.returncode == 0, r.stderr
        listed = json.loads(r.stdout)
        assert len(listed) == 1, listed
        pkh = listed[0]["pkh"]
        assert pkh.startswith("tz3")
        pk = h.get_public_key(server, pkh)
        assert pk == listed[0]["public_key"] and pk.startswith("p2pk")
        message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(7)
        tzcrypto.verify(pk, h.sign(server, pkh, message.hex()), message)
    finally:
        assert server.stop() == 0
    # A second start reuses the key instead of generating another.
    server = h.start_server(data_dir, config=h.GENERIC_UNCHECKED)
    try:
        r = h.run_tzkms(["keys", "list", "--data-dir", str(data_dir), "--json"])
        assert [e["pkh"] for e in json.loads(r.stdout)] == [pkh]
    finally:
        server.stop()


def test_sigterm_exits_cleanly(tmp_path):
    k = h.vector_key("bootstrap1")
    h.import_key(tmp_path, k["sk"])
    server = h.start_server(tmp_path, config=h.GENERIC_UNCHECKED)
    message = b"\x03" + os.urandom(16)
    tzcrypto.verify(k["pk"], h.sign(server, k["pkh"], message.hex()), message)
    assert server.stop(timeout=10) == 0, server.stderr()


def _serve_fails(data_dir, env=None) -> str:
    try:
        server = h.start_server(data_dir, env=env, timeout=30, config=h.GENERIC_UNCHECKED)
    except AssertionError as e:
        assert "exited" in str(e), e
        return str(e)
    server.stop()
    raise AssertionError("tzkms serve started")


def test_key_file_with_unsafe_permissions_is_refused(tmp_path):
    k = h.vector_key("bootstrap1")
    h.import_key(tmp_path, k["sk"])
    for p in _files(tmp_path):
        if k["sk"] in p.read_text(errors="replace"):
            p.chmod(0o644)
    message = _serve_fails(tmp_path)
    assert "0644" in message or "chmod" in message or "permission" in message.lower(), message


def test_encrypted_key_without_password_is_refused_at_start(tmp_path):
    e = next(x for x in h.load_vectors("signatures.json")["encrypted_keys"]
             if x["esk"].startswith("p2esk"))
    assert h.import_key(tmp_path, e["esk"], password=e["password"]) == e["pkh"]
    message = _serve_fails(tmp_path)
    assert "TZKMS_KEY_PASSWORD" in message or "password" in message.lower(), message
    message = _serve_fails(tmp_path, env={"TZKMS_KEY_PASSWORD": e["password"] + "-wrong"})
