"""Threshold cosigning checked with py_ecc alone (threshold_py): three real tzkms cosigners and a coordinator
(2-of-3, mTLS with certificates made by the openssl command) sign tz4 preattestations (tag 40), attestations
(tag 41) and blocks; py_ecc verifies every combined signature under the group key, verifies each cosigner's
partial signature under its share key, and recombines the partials itself to the coordinator's signature."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

import threshold_py as t
import tzkms_harness as h

CHAIN = bytes.fromhex("7a06a770")


def consensus(magic: int, tag: int, level: int, variant: int) -> bytes:
    return bytes([magic]) + CHAIN + b"\x11" * 32 + bytes([tag]) + level.to_bytes(4, "big") + \
        (0).to_bytes(4, "big") + bytes([variant]) * 32


def block(level: int) -> bytes:
    fitness = bytes([0, 0, 0, 1, 2, 0, 0, 0, 4]) + level.to_bytes(4, "big") + \
        bytes([0, 0, 0, 0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 4]) + (0).to_bytes(4, "big")
    return (b"\x11" + CHAIN + level.to_bytes(4, "big") + b"\x01" + b"\x21" * 32
            + (1_700_000_000).to_bytes(8, "big") + b"\x04" + b"\x22" * 32
            + len(fitness).to_bytes(4, "big") + fitness + b"\x23" * 32 + b"\x01" * 32
            + (0).to_bytes(4, "big") + b"\x00" * 8 + b"\x00" + b"\x02")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key", cwd=d)
    openssl("req", "-new", "-x509", "-key", "ca.key", "-subj", "/CN=e2e CA", "-days", "2", "-out", "ca.pem", cwd=d)
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                     ("coordinator", "extendedKeyUsage=clientAuth\n")):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{who}.key", cwd=d)
        openssl("req", "-new", "-key", f"{who}.key", "-subj", f"/CN={who}", "-out", f"{who}.csr", cwd=d)
        (d / f"{who}.ext").write_text(ext)
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-sha256", "-extfile", f"{who}.ext", "-out", f"{who}.pem", cwd=d)
        (d / f"{who}.key").chmod(0o600)


def tzkms(*args: str) -> subprocess.CompletedProcess:
    r = h.run_tzkms(list(args))
    assert r.returncode == 0, f"tzkms {' '.join(args)}: {r.stderr}"
    return r


@pytest.fixture(scope="module")
def cluster():
    root = h.make_data_dir("tzkms-threshold-")
    make_certificates(root)
    src = root / "src"
    src.mkdir(mode=0o700)
    tzkms("keys", "generate", "--curve", "bls", "--alias", "g", "--data-dir", str(src))
    split = tzkms("threshold", "split", "--key", "g", "--shares", "3", "--threshold", "2", "--data-dir", str(src))
    doc = json.loads(split.stdout)
    (root / "split.json").write_text(split.stdout)
    share_pks = dict((int(i), pk) for i, pk in re.findall(r"share (\d+): public key (BLpk\w+)", split.stderr))
    group_pk, pkh = doc["public_key"], doc["public_key_hash"]
    servers, ports = [], {}
    cosigners = ""
    for i in (1, 2, 3):
        d = root / f"c{i}"
        d.mkdir(mode=0o700)
        tzkms("threshold", "import", str(root / "split.json"), "--id", str(i), "--data-dir", str(d))
        tzkms("watermark", "floor", pkh, "--level", "1", "--data-dir", str(d))
        ports[i] = free_port()
        config = (f'[keys]\ngenerate_if_empty = false\n[server.tls]\nlisten = ["127.0.0.1:{ports[i]}"]\n'
                  f'certificate = "{root}/server.pem"\nprivate_key = "{root}/server.key"\nclient_ca = "{root}/ca.pem"\n'
                  f'[policy.keys.{pkh}]\nallow = ["block", "preattestation", "attestation"]\n'
                  f'tls_clients = ["cn:coordinator"]\n')
        servers.append(h.start_server(d, config=config))
        cosigners += (f'[[threshold.groups.cosigners]]\nid = {i}\nurl = "https://127.0.0.1:{ports[i]}"\n'
                      f'share_public_key = "{share_pks[i]}"\n')
    d = root / "coordinator"
    d.mkdir(mode=0o700)
    tzkms("watermark", "floor", pkh, "--level", "1", "--data-dir", str(d))
    config = (f'[keys]\ngenerate_if_empty = false\n[threshold.client]\ncertificate = "{root}/coordinator.pem"\n'
              f'private_key = "{root}/coordinator.key"\nserver_ca = "{root}/ca.pem"\n[[threshold.groups]]\n'
              f'public_key = "{group_pk}"\nthreshold = 2\n' + cosigners)
    coordinator = h.start_server(d, config=config)
    servers.append(coordinator)
    yield {"root": root, "pkh": pkh, "group_pk": group_pk, "share_pks": share_pks, "ports": ports,
           "coordinator": coordinator}
    for s in servers:
        s.stop()
    shutil.rmtree(root, ignore_errors=True)


def cosign(c, i: int, message: bytes, version: int) -> dict:
    """The test as a coordinator: asks cosigner i directly, with the coordinator's client certificate."""
    ctx = ssl.create_default_context(cafile=str(c["root"] / "ca.pem"))
    ctx.load_cert_chain(str(c["root"] / "coordinator.pem"), str(c["root"] / "coordinator.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", c["ports"][i], context=ctx, timeout=10)
    try:
        conn.request("POST", f"/cosign/{c['pkh']}?version={version}", body=json.dumps(message.hex()),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200, body
        return body
    finally:
        conn.close()


@pytest.mark.parametrize("version,scheme", [(1, "aug"), (2, "pop"), (3, "pop")])
def test_combined_signatures_verify_under_the_group_key_with_py_ecc(cluster, version, scheme):
    level = 100 + version
    for message in (consensus(0x12, 40, level, 1), consensus(0x13, 41, level, 1), block(level)):
        sig = h.sign(cluster["coordinator"], cluster["pkh"], message.hex(), version=version)
        assert t.verify_b58(cluster["group_pk"], message, sig, scheme), (version, message[:1].hex())
        assert not t.verify_b58(cluster["group_pk"], message + b"\x00", sig, scheme)
        # Each cosigner answers the identical bytes with its stored partial; py_ecc checks each under its
        # share key and recombines any two of them into the coordinator's signature.
        partials = []
        for i in (1, 2, 3):
            body = cosign(cluster, i, message, version)
            assert body["share_id"] == i
            partial = t.unb58(body["signature"])
            assert t.verify_partial(t.unb58(cluster["share_pks"][i]), t.unb58(cluster["group_pk"]), message,
                                    partial, scheme), i
            partials.append((i, partial))
        for pair in ([0, 1], [1, 2], [0, 2]):
            combined = t.combine([partials[k] for k in pair])
            assert combined == t.unb58(sig), pair
