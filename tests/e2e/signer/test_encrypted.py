"""Encrypted secret keys (edesk, spesk, p2esk, BLesk) from signatures.json.

Each esk is imported with its password in TZKMS_KEY_PASSWORD; the server gets
the same variable to unlock it at start, then signs, and the signature is
verified against the vector's public key.
"""

import os

import pytest

import tzcrypto
import tzkms_harness as h

ENCRYPTED = h.load_vectors("signatures.json")["encrypted_keys"]
PASSWORDS = sorted({e["password"] for e in ENCRYPTED})


@pytest.fixture(scope="module")
def servers(launch):
    """One server per password (the server reads one TZKMS_KEY_PASSWORD)."""
    out = {}
    for pw in PASSWORDS:
        keys = [dict(e, password=pw) for e in ENCRYPTED if e["password"] == pw]
        out[pw] = launch(keys, env={"TZKMS_KEY_PASSWORD": pw}, config=h.GENERIC_UNCHECKED)
    return out


def test_vectors_have_all_curves():
    assert {e["esk"][:2] for e in ENCRYPTED} >= {"ed", "sp", "p2", "BL"}


@pytest.mark.parametrize("e", ENCRYPTED, ids=[e["id"] for e in ENCRYPTED])
def test_encrypted_key_signs(servers, e):
    s = servers[e["password"]]
    assert h.get_public_key(s.server, e["pkh"]) == e["pk"]
    # A tz4 key signs the BLS-mode preattestation (tag 40); tag 20 is for tz1-tz3 keys.
    preattestation = "tezt-bls-mode-preattestation" if e["curve"] == "bls" else "tezt-preattestation"
    for message in (b"\x03" + os.urandom(32) + b"\xee" + os.urandom(7), bytes.fromhex(h.payload(preattestation)["hex"])):
        sig = h.sign(s.server, e["pkh"], message.hex(), version=3)
        tzcrypto.verify(e["pk"], sig, message, 3)
        if e["curve"] in ("ed25519", "secp256k1"):
            # Same signature as the decrypted secret key gives.
            assert sig == tzcrypto.local_signature(e["sk"], message)


def test_wrong_password_is_refused(tmp_path):
    e = next(x for x in ENCRYPTED if x["esk"].startswith("p2esk"))
    r = h.run_tzkms(["keys", "import", "--data-dir", str(tmp_path)], input=e["esk"] + "\n",
                    env={"TZKMS_KEY_PASSWORD": e["password"] + "-wrong"})
    assert r.returncode != 0, f"import with a wrong password succeeded: {r.stdout}"
    assert e["pkh"] not in r.stdout


def test_missing_password_is_refused(tmp_path):
    e = next(x for x in ENCRYPTED if x["esk"].startswith("edesk"))
    r = h.run_tzkms(["keys", "import", "--data-dir", str(tmp_path)], input=e["esk"] + "\n")
    assert r.returncode != 0, f"import of an encrypted key without password succeeded: {r.stdout}"


def test_imported_encrypted_key_is_not_stored_in_clear(servers):
    for e in ENCRYPTED:
        data_dir = servers[e["password"]].server.data_dir
        for p in data_dir.rglob("*"):
            if p.is_file():
                assert e["sk"] not in p.read_text(errors="replace"), f"{p} holds {e['id']} in clear"
