"""pytezos verifies tzkms signatures over the consensus payloads of payloads.json.

tz1 (ed25519), tz2 (secp256k1) and tz3 (P-256) file keys sign every accepted
block / preattestation / attestation payload (tags 20, 21, 23 and blocks with
unlocked and locked fitness) through POST /keys/<pkh>?version=3. Each returned
signature is checked with pytezos Key.verify (blake2b-256 of the payload),
tz2 signatures must be low-S, and for the deterministic curves the signature
must equal the one pytezos itself computes with the same secret key. Each
payload goes to its own server, so the high watermark never interferes.
"""

import os

import pytest

import tzcrypto
import tzkms_harness as h

KEY_IDS = ["bootstrap1", "hardcoded_secp256k1", "hardcoded_p256"]

CONSENSUS = [
    p for p in h.load_vectors("payloads.json")["payloads"]
    if p["expected"]["accept"]
    and p["expected"]["kind"] in ("block", "preattestation", "attestation")
    and p["expected"].get("tag") not in (40, 41)  # BLS-mode payloads: see test_bls.py
]


def test_vectors_cover_each_consensus_kind():
    kinds = {p["expected"]["kind"] for p in CONSENSUS}
    tags = {p["expected"].get("tag") for p in CONSENSUS}
    assert kinds == {"block", "preattestation", "attestation"}
    assert {20, 21, 23} <= tags


@pytest.mark.parametrize("key_id", KEY_IDS)
def test_public_key_route(signer, key_id):
    k = h.vector_key(key_id)
    r = h.request(f"{signer.url}/keys/{k['pkh']}")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("application/json")
    assert r.json() == {"public_key": k["pk"]}


@pytest.mark.parametrize("payload_id", [p["id"] for p in CONSENSUS])
@pytest.mark.parametrize("key_id", KEY_IDS)
def test_consensus_signature_verifies_with_pytezos(fresh_signers, key_id, payload_id):
    k = h.vector_key(key_id)
    p = h.payload(payload_id)
    message = bytes.fromhex(p["hex"])
    # One server (one fresh high watermark) per payload: see conftest.fresh_signers.
    s = fresh_signers(payload_id, [h.vector_key(i) for i in KEY_IDS])
    sig = h.sign(s.server, k["pkh"], p["hex"], version=3)

    tzcrypto.verify(k["pk"], sig, message)
    # The same signature must not verify for a one-bit different payload.
    altered = message[:-1] + bytes([message[-1] ^ 1])
    assert not tzcrypto.is_valid(k["pk"], sig, altered)

    if k["curve"] == "secp256k1":
        tzcrypto.assert_low_s(sig)
    if k["curve"] in ("ed25519", "secp256k1"):
        # ed25519 and RFC 6979 secp256k1 are deterministic: pytezos must agree.
        assert sig == tzcrypto.local_signature(k["sk"], message)


@pytest.mark.parametrize("key_id", KEY_IDS)
def test_version_does_not_change_non_bls_signatures(signer, key_id):
    k = h.vector_key(key_id)
    # 0xee: an undecoded tag, so no random first byte lands on a never-signed kind.
    message = b"\x03" + os.urandom(32) + b"\xee" + os.urandom(31)
    sigs = {v: h.sign(signer.server, k["pkh"], message.hex(), version=v)
            for v in (None, 0, 1, 2, 3)}
    for v, sig in sigs.items():
        tzcrypto.verify(k["pk"], sig, message, v)
    if k["curve"] in ("ed25519", "secp256k1"):
        assert len(set(sigs.values())) == 1, sigs
