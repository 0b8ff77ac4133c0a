"""`tzkms threshold split` checked with py_ecc alone (threshold_py): the JSON is Octez's, its shares are
points of a polynomial whose value at 0 is the key, each share's public key is the one tzkms prints, and
M partial signatures made by py_ecc combine (in Python) into a signature that verifies under the tz4 key
and equals the signature tzkms itself returns for the unsplit key."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import threshold_py as t
import threshold_vectors
import tzkms_harness as h

KEY_ID = "bls_test_account"
PAYLOAD_ID = "tezt-bls-mode-attestation"  # tag 41, what a tz4 baker's cosigners sign
VECTORS_FILE = h.REPO_ROOT / "crates" / "tezos" / "tests" / "vectors" / "threshold_py_ecc.json"


@pytest.fixture(scope="module")
def key_dir():
    data_dir = h.make_data_dir()
    pkh = h.import_key(data_dir, h.vector_key(KEY_ID)["sk"], alias="baker")
    assert pkh == h.vector_key(KEY_ID)["pkh"]
    yield data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


def _split(data_dir: Path, n: int, m: int, *extra: str):
    r = h.run_tzkms(["threshold", "split", "--key", "baker", "--shares", str(n), "--threshold", str(m),
                     "--data-dir", str(data_dir), *extra])
    return r


@pytest.fixture(scope="module")
def split_3_of_5(key_dir):
    r = _split(key_dir, 5, 3)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_split_json_is_octezs_and_interpolates_to_the_key(split_3_of_5):
    doc, stderr = split_3_of_5
    key = h.vector_key(KEY_ID)
    group, shares = t.check_share_set(doc)  # field names, tz4 hash, proof of possession (py_ecc)
    assert doc["public_key"] == key["pk"] and doc["public_key_hash"] == key["pkh"]
    assert [i for i, _ in shares] == [1, 2, 3, 4, 5]
    secret = t.sk_int(key["sk"])
    # Any 3 shares give the key back; 2 do not; all 5 lie on one degree-2 polynomial.
    for ids in ([1, 2, 3], [5, 3, 1], [2, 4, 5]):
        assert t.interpolate_secret([s for s in shares if s[0] in ids]) == secret, ids
    assert t.interpolate_secret(shares[:2]) != secret
    assert t.interpolate_secret(shares) == secret
    # The share public keys tzkms prints on stderr are py_ecc's s(i)·G1, and they interpolate in G1.
    printed = dict(re.findall(r"share (\d+): public key (BLpk\w+)", stderr))
    pks = [(i, t.public_key(s)) for i, s in shares]
    assert {int(i): pk for i, pk in printed.items()} == {i: t.b58("BLpk", pk) for i, pk in pks}
    assert t.interpolate_public_keys(pks[2:]) == group
    assert t.interpolate_public_keys(pks[:3], x=4) == pks[3][1]


@pytest.mark.parametrize("scheme,version", [("pop", 3), ("aug", 1)])
def test_py_ecc_partials_combine_into_tzkms_signature(launch, split_3_of_5, scheme, version):
    doc, _ = split_3_of_5
    group, shares = t.check_share_set(doc)
    message = bytes.fromhex(h.payload(PAYLOAD_ID)["hex"])
    chosen = [s for s in shares if s[0] in (2, 5, 4)]
    partials = [(i, t.sign_partial(s, group, message, scheme)) for i, s in chosen]
    assert t.verify_partial(t.public_key(chosen[0][1]), group, message, partials[0][1], scheme)
    # A share's own AUG signature (its key prepended) is not a partial for the group.
    if scheme == "aug":
        own = t.AUG.Sign(chosen[0][1], message)
        assert not t.verify_partial(t.public_key(chosen[0][1]), group, message, own, scheme)
    combined = t.combine(partials)
    assert t.verify(group, message, combined, scheme), "combined signature does not verify (py_ecc)"
    assert t.combine(partials[:2]) != combined
    # BLS is deterministic: the combination is exactly what tzkms signs with the whole key.
    key = h.vector_key(KEY_ID)
    signer = launch([key])
    sig = h.sign(signer.server, key["pkh"], message.hex(), version=version)
    assert t.unb58(sig) == combined


def test_split_refuses_a_minority_threshold(key_dir):
    r = _split(key_dir, 4, 2)
    assert r.returncode != 0 and r.stdout == ""
    assert "two disjoint groups" in r.stderr and "--allow-non-majority" in r.stderr
    r = _split(key_dir, 4, 2, "--allow-non-majority")
    assert r.returncode == 0, r.stderr
    _, shares = t.check_share_set(json.loads(r.stdout))
    assert t.interpolate_secret(shares[1:3]) == t.sk_int(h.vector_key(KEY_ID)["sk"])


def test_committed_known_answers_are_py_eccs():
    """crates/tezos/tests/vectors/threshold_py_ecc.json, which the Rust tests check tzkms against, is
    exactly what py_ecc computes."""
    assert json.loads(VECTORS_FILE.read_text()) == threshold_vectors.build()
