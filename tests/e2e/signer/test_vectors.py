"""signatures.json reproduced through the real server.

Every secret key of signatures.json is imported into tzkms. Deterministic
vectors (ed25519, RFC 6979 low-S secp256k1, BLS POP and AUG) must come back as
exactly the published signature; P-256 vectors (random nonces) are verified.
BLS POP vectors are requested with version=3, AUG vectors with version=1, on
separate servers so that the same bytes are never signed twice by one server.
Some vectors sign bytes whose first byte is not a Tenderbake/generic magic
byte (0x01, 0x62, 0x74), and some 0x03 vectors are not operations ("03 1234"),
so these servers get a config allowing them: the magic bytes globally, and
legacy_block, other_magic_bytes and generic_unchecked for every key.
"""

import json

import pytest

import tzcrypto
import tzkms_harness as h

VECTORS = h.load_vectors("signatures.json")["signatures"]


def _unique_keys(vectors):
    seen = {}
    for v in vectors:
        seen.setdefault(v["pkh"], {"sk": v["sk"], "pk": v["pk"], "pkh": v["pkh"]})
    return list(seen.values())


def _version(v):
    return 1 if v.get("scheme") == "aug" else 3


MAGIC_BYTES = sorted({v["message_hex"][:2] for v in VECTORS} | {"03", "05", "11", "12", "13"})
CONFIG = ("[policy]\nallowed_magic_bytes = [%s]\n" % ", ".join(f'"0x{m}"' for m in MAGIC_BYTES)
          + "[policy.default]\nallow = [\"block\", \"preattestation\", \"attestation\", \"michelson_data\", "
            "\"legacy_block\", \"legacy_endorsement\", \"other_magic_bytes\", \"generic_unchecked\"]\n")


@pytest.fixture(scope="module")
def servers(launch):
    aug = [v for v in VECTORS if v.get("scheme") == "aug"]
    rest = [v for v in VECTORS if v.get("scheme") != "aug"]
    return {"aug": launch(_unique_keys(aug), config=CONFIG),
            "other": launch(_unique_keys(rest), config=CONFIG)}


def _server_for(servers, v):
    return servers["aug" if v.get("scheme") == "aug" else "other"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_public_key(servers, v):
    s = _server_for(servers, v)
    assert h.get_public_key(s.server, v["pkh"]) == v["pk"]


@pytest.mark.parametrize("v", VECTORS, ids=[v["id"] for v in VECTORS])
def test_signature_vector(servers, v):
    s = _server_for(servers, v)
    message = bytes.fromhex(v["message_hex"])
    if message[0] in (0x01, 0x02) and len(message) < 9:
        # By design tzkms parses legacy (Emmy) consensus payloads even when their magic byte is
        # allowed, and refuses ones too short to hold a level: when unsure, refuse.
        url = f"{s.server.url}/keys/{v['pkh']}?version={_version(v)}"
        r = h.request(url, "POST", json.dumps(v["message_hex"]).encode(),
                      {"Content-Type": "application/json"})
        assert r.status == 400, (r.status, r.body)
        assert "legacy consensus payload is" in r.json()[0]["msg"]
        return
    sig = h.sign(s.server, v["pkh"], v["message_hex"], version=_version(v))
    tzcrypto.verify(v["pk"], sig, message, _version(v))
    if v["deterministic"]:
        assert sig == v["signature"], (
            f"{v['id']}: tzkms returned {sig}, the vector says {v['signature']}")
        assert tzcrypto.decode(sig).hex() == v["signature_hex"]
    if v["curve"] == "secp256k1":
        tzcrypto.assert_low_s(sig)
