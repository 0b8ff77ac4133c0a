"""tz4 (BLS12-381) signatures checked by an independent implementation, py_ecc.

version=3 (and 2, or no version) must give a POP-scheme signature
(G2ProofOfPossession), version=1 an AUG-scheme one (G2MessageAugmentation);
version=0 predates BLS in Octez and is refused for tz4 keys. BLS is deterministic, so each signature must also
equal the one py_ecc computes from the vector's secret key (BLsk payloads are
little-endian scalars).
"""

import json
import os

import pytest
from py_ecc.bls import G2MessageAugmentation as AUG
from py_ecc.bls import G2ProofOfPossession as POP

import tzcrypto
import tzkms_harness as h

BLS_KEY_IDS = ["bls_test_account", "hardcoded_bls", "taquito-tz4", "pytezos-bls-aug-key"]

# BLS-mode consensus payloads (tags 40, 41) and blocks.
BLS_PAYLOADS = [
    p for p in h.load_vectors("payloads.json")["payloads"]
    if p["expected"]["accept"]
    and (p["expected"].get("tag") in (40, 41) or p["expected"]["kind"] == "block")
]


def _sk_int(sk: str) -> int:
    return int.from_bytes(tzcrypto.decode(sk), "little")


def _expected(key, message: bytes, scheme: str) -> bytes:
    return (POP if scheme == "pop" else AUG).Sign(_sk_int(key["sk"]), message)


@pytest.fixture(scope="module")
def pop_signer(launch):
    return launch([h.vector_key(i) for i in BLS_KEY_IDS], config=h.GENERIC_UNCHECKED)


def _consensus_signer(fresh_signers, payload_id, scheme):
    # One server (fresh high watermark) per payload and scheme: the same bytes
    # are signed with version=3 and version=1, and some payloads share a slot.
    return fresh_signers((payload_id, scheme), [h.vector_key(i) for i in BLS_KEY_IDS],
                         config=h.GENERIC_UNCHECKED)


def test_payload_selection():
    assert {p["expected"].get("tag") for p in BLS_PAYLOADS} >= {40, 41}
    assert any(p["expected"]["kind"] == "block" for p in BLS_PAYLOADS)


@pytest.mark.parametrize("key_id", BLS_KEY_IDS)
def test_public_key(pop_signer, key_id):
    k = h.vector_key(key_id)
    pk = h.get_public_key(pop_signer.server, k["pkh"])
    assert pk == k["pk"] and pk.startswith("BLpk")


@pytest.mark.parametrize("payload_id", [p["id"] for p in BLS_PAYLOADS])
@pytest.mark.parametrize("key_id", BLS_KEY_IDS[:2])
def test_consensus_pop_version3(fresh_signers, key_id, payload_id):
    k = h.vector_key(key_id)
    message = bytes.fromhex(h.payload(payload_id)["hex"])
    s = _consensus_signer(fresh_signers, payload_id, "pop")
    sig = h.sign(s.server, k["pkh"], message.hex(), version=3)
    raw_pk, raw_sig = tzcrypto.decode(k["pk"]), tzcrypto.decode(sig)
    assert sig.startswith("BLsig") and len(raw_sig) == 96
    assert POP.Verify(raw_pk, message, raw_sig), "POP signature does not verify (py_ecc)"
    assert not AUG.Verify(raw_pk, message, raw_sig), "version=3 must not give an AUG signature"
    assert not POP.Verify(raw_pk, message + b"\x00", raw_sig)
    assert raw_sig == _expected(k, message, "pop")


@pytest.mark.parametrize("payload_id", [p["id"] for p in BLS_PAYLOADS])
@pytest.mark.parametrize("key_id", BLS_KEY_IDS[:2])
def test_consensus_aug_version1(fresh_signers, key_id, payload_id):
    k = h.vector_key(key_id)
    message = bytes.fromhex(h.payload(payload_id)["hex"])
    s = _consensus_signer(fresh_signers, payload_id, "aug")
    sig = h.sign(s.server, k["pkh"], message.hex(), version=1)
    raw_pk, raw_sig = tzcrypto.decode(k["pk"]), tzcrypto.decode(sig)
    assert AUG.Verify(raw_pk, message, raw_sig), "AUG signature does not verify (py_ecc)"
    assert not POP.Verify(raw_pk, message, raw_sig), "version=1 must not give a POP signature"
    assert raw_sig == _expected(k, message, "aug")


@pytest.mark.parametrize("key_id", BLS_KEY_IDS)
def test_version_selects_scheme(pop_signer, key_id):
    k = h.vector_key(key_id)
    raw_pk = tzcrypto.decode(k["pk"])
    message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(15)
    sigs = {v: tzcrypto.decode(h.sign(pop_signer.server, k["pkh"], message.hex(), version=v))
            for v in (None, 1, 2, 3)}
    for v in (None, 2, 3):
        assert POP.Verify(raw_pk, message, sigs[v]), f"version={v}: not a POP signature"
        assert sigs[v] == _expected(k, message, "pop"), f"version={v}"
    for v in (1,):
        assert AUG.Verify(raw_pk, message, sigs[v]), f"version={v}: not an AUG signature"
        assert sigs[v] == _expected(k, message, "aug"), f"version={v}"
    assert sigs[3] != sigs[1]


@pytest.mark.parametrize("key_id", BLS_KEY_IDS[:1])
def test_version_0_is_refused_for_tz4(pop_signer, key_id):
    k = h.vector_key(key_id)
    message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(15)
    url = f"{pop_signer.server.url}/keys/{k['pkh']}?version=0"
    r = h.request(url, "POST", json.dumps(message.hex()).encode(), {"Content-Type": "application/json"})
    assert r.status == 400, (r.status, r.body)
    assert b"signature version 0 has no BLS" in r.body
