"""Independent signature checks: pytezos for tz1/tz2/tz3, py_ecc for tz4."""

from __future__ import annotations

from py_ecc.bls import G2MessageAugmentation, G2ProofOfPossession
from pytezos.crypto.encoding import base58_decode
from pytezos.crypto.key import Key

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

SIG_PREFIX = {"ed": "edsig", "sp": "spsig1", "p2": "p2sig", "BL": "BLsig"}


def decode(b58: str) -> bytes:
    return base58_decode(b58.encode())


def bls_scheme(version: int | None) -> str:
    """Signature version -> BLS scheme: 0/1 AUG, 2/3/absent POP."""
    return "aug" if version in (0, 1) else "pop"


def verify(pk: str, sig: str, message: bytes, version: int | None = 3) -> None:
    """Raises AssertionError unless sig is a valid signature of message by pk.

    ed25519/secp256k1/P-256 go through pytezos Key.verify (blake2b-256 of the
    message); BLS through py_ecc with the scheme selected by the version.
    """
    curve = pk[:2]
    assert sig.startswith(SIG_PREFIX[curve]), f"{sig[:8]}... is not a {SIG_PREFIX[curve]} signature"
    if curve == "BL":
        raw_pk, raw_sig = decode(pk), decode(sig)
        assert len(raw_pk) == 48 and len(raw_sig) == 96
        scheme = bls_scheme(version)
        ok = (G2ProofOfPossession if scheme == "pop" else G2MessageAugmentation).Verify(
            raw_pk, message, raw_sig)
        assert ok, f"BLS {scheme} signature does not verify"
        return
    try:
        assert Key.from_encoded_key(pk).verify(sig, message) is True
    except ValueError as e:
        raise AssertionError(f"pytezos: {e}") from e


def is_valid(pk: str, sig: str, message: bytes, version: int | None = 3) -> bool:
    try:
        verify(pk, sig, message, version)
        return True
    except AssertionError:
        return False


def assert_low_s(sig: str) -> None:
    raw = decode(sig)
    assert len(raw) == 64
    s = int.from_bytes(raw[32:], "big")
    assert 0 < s <= SECP256K1_N // 2, f"secp256k1 signature is not low-S: s={s:#x}"


def local_signature(sk: str, message: bytes) -> str:
    """The deterministic signature pytezos computes (ed25519, secp256k1 RFC 6979 low-S)."""
    return Key.from_encoded_key(sk).sign(message)
