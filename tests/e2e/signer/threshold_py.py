"""Threshold BLS (tz4) with py_ecc alone: an implementation independent of tzkms to check its shares,
partial signatures and combined signatures against.

Conventions (Octez's, src/lib_crypto/bls.ml): a secret polynomial s(x) over the BLS12-381 scalar field with
s(0) the tz4 secret key; share i (1..N <= 127) is s(i), written as an ordinary BLsk key (little-endian
scalar); its public key is s(i)·G1. A partial signature is the share's signature over the message with the
ciphersuite of the request: POP (G2ProofOfPossession's DST, the message itself) or AUG (G2MessageAugmentation's
DST over GROUP public key ‖ message: the group key, not the share's, is prepended). M partials combine by
Lagrange interpolation at 0 in G2 into the group key's own signature.

Tezos's DSTs are exactly py_ecc's ciphersuites:
    POP  BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_   (G2ProofOfPossession.DST)
    AUG  BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_AUG_   (G2MessageAugmentation.DST)
    proof of possession  BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_  (G2ProofOfPossession.POP_TAG)
"""

from __future__ import annotations

import hashlib

from py_ecc.bls import G2MessageAugmentation as AUG
from py_ecc.bls import G2ProofOfPossession as POP
from py_ecc.bls.g2_primitives import G1_to_pubkey, G2_to_signature, pubkey_to_G1, signature_to_G2
from py_ecc.optimized_bls12_381 import Z1, Z2, add, curve_order, multiply
from pytezos.crypto.encoding import base58_decode, base58_encode

R = curve_order
SCHEMES = {"pop": POP, "aug": AUG}


# ---------------------------------------------------------------- encodings
def b58(prefix: str, raw: bytes) -> str:
    return base58_encode(raw, prefix.encode()).decode()


def unb58(text: str) -> bytes:
    return base58_decode(text.encode())


def sk_int(blsk: str) -> int:
    """A BLsk… key (or share) as its scalar (Tezos writes BLS scalars little-endian)."""
    return int.from_bytes(unb58(blsk), "little")


def sk_b58(scalar: int) -> str:
    return b58("BLsk", scalar.to_bytes(32, "little"))


def public_key(scalar: int) -> bytes:
    return POP.SkToPk(scalar)


def pkh(pk: bytes) -> str:
    """tz4 address: base58check of blake2b-160 of the compressed G1 public key."""
    return b58("tz4", hashlib.blake2b(pk, digest_size=20).digest())


# ---------------------------------------------------------------- Shamir / Lagrange over Fr
def evaluate(coeffs: list[int], x: int) -> int:
    """s(x) for s = coeffs[0] + coeffs[1] x + … (Horner, mod r)."""
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % R
    return acc


def split(secret: int, coeffs: list[int], n: int) -> list[tuple[int, int]]:
    """Shares (id, s(id)) for ids 1..n of the polynomial secret + coeffs[0] x + coeffs[1] x^2 + …"""
    poly = [secret % R] + [c % R for c in coeffs]
    return [(i, evaluate(poly, i)) for i in range(1, n + 1)]


def lagrange_at(x: int, ids: list[int]) -> list[int]:
    """λ_i(x) = Π_{j≠i} (x − x_j)/(x_i − x_j) mod r, for distinct ids."""
    assert len(set(ids)) == len(ids), f"duplicate ids {ids}"
    out = []
    for i, xi in enumerate(ids):
        num, den = 1, 1
        for j, xj in enumerate(ids):
            if j != i:
                num = num * (x - xj) % R
                den = den * (xi - xj) % R
        out.append(num * pow(den, -1, R) % R)
    return out


def interpolate_secret(shares: list[tuple[int, int]]) -> int:
    ids = [i for i, _ in shares]
    return sum(l * y for l, (_, y) in zip(lagrange_at(0, ids), shares)) % R


def interpolate_public_keys(shares: list[tuple[int, bytes]], x: int = 0) -> bytes:
    """The G1 point at x of the polynomial through (id, share public key)."""
    ids = [i for i, _ in shares]
    acc = Z1
    for lam, (_, pk) in zip(lagrange_at(x, ids), shares):
        acc = add(acc, multiply(pubkey_to_G1(pk), lam))
    return G1_to_pubkey(acc)


# ---------------------------------------------------------------- signatures
def sign_partial(share: int, group_pk: bytes, message: bytes, scheme: str) -> bytes:
    suite = SCHEMES[scheme]
    msg = group_pk + message if scheme == "aug" else message
    return suite._CoreSign(share, msg, suite.DST)


def verify_partial(share_pk: bytes, group_pk: bytes, message: bytes, sig: bytes, scheme: str) -> bool:
    suite = SCHEMES[scheme]
    msg = group_pk + message if scheme == "aug" else message
    return suite._CoreVerify(share_pk, msg, sig, suite.DST)


def combine(partials: list[tuple[int, bytes]]) -> bytes:
    """Lagrange interpolation at 0 in G2 of (id, partial signature): all the partials given are used."""
    ids = [i for i, _ in partials]
    acc = Z2
    for lam, (_, sig) in zip(lagrange_at(0, ids), partials):
        acc = add(acc, multiply(signature_to_G2(sig), lam))
    return G2_to_signature(acc)


def verify(group_pk: bytes, message: bytes, sig: bytes, scheme: str) -> bool:
    """An ordinary tz4 verification (AUG prepends the key it verifies under: the group key)."""
    return SCHEMES[scheme].Verify(group_pk, message, sig)


def verify_b58(group_pk: str, message: bytes, sig: str, scheme: str) -> bool:
    return verify(unb58(group_pk), message, unb58(sig), scheme)


# ---------------------------------------------------------------- Octez's share JSON
def check_share_set(doc: dict) -> tuple[bytes, list[tuple[int, int]]]:
    """Checks `octez-client share bls secret key …` JSON with py_ecc: field names, hash, proof of possession
    of the group key; returns (group public key, [(id, share scalar)])."""
    assert set(doc) == {"public_key", "public_key_hash", "proof", "secret_shares"}, sorted(doc)
    pk = unb58(doc["public_key"])
    assert doc["public_key"].startswith("BLpk") and len(pk) == 48
    assert doc["public_key_hash"] == pkh(pk)
    assert doc["proof"].startswith("BLsig")
    assert POP.PopVerify(pk, unb58(doc["proof"])), "proof is not a proof of possession of public_key"
    shares = []
    for s in doc["secret_shares"]:
        assert set(s) == {"id", "secret_key"}, sorted(s)
        assert isinstance(s["id"], int) and 1 <= s["id"] <= 127
        assert s["secret_key"].startswith("BLsk")
        shares.append((s["id"], sk_int(s["secret_key"])))
    return pk, shares
