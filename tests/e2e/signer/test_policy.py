"""Policy over HTTP. A key without a policy of its own signs consensus payloads
only (0x11, 0x12, 0x13): generic operations (0x03) and Michelson data (0x05)
are refused with 403 naming the rule. [policy] allowed_magic_bytes is the
global octez-signer style list on top; per-key [policy.keys.<pkh>] sections
allow more; 0x04 is never signed, whatever the config says."""

import json
import os

import pytest

import tzcrypto
import tzkms_harness as h

KEY = h.vector_key("bootstrap1")
PREATTESTATION = h.payload("tezt-preattestation")["hex"]


@pytest.fixture(scope="module")
def default_policy(launch):
    return launch([KEY])


def _post(signer, hex_payload):
    return h.request(f"{signer.url}/keys/{KEY['pkh']}?version=3", "POST",
                     json.dumps(hex_payload).encode(), {"Content-Type": "application/json"})


def test_default_signs_consensus(default_policy):
    message = bytes.fromhex(PREATTESTATION)
    tzcrypto.verify(KEY["pk"], h.sign(default_policy.server, KEY["pkh"], PREATTESTATION), message)


@pytest.mark.parametrize("magic,kind", [("03", "generic operations"), ("05", "michelson_data")])
def test_default_refuses_generic_and_michelson(default_policy, magic, kind):
    r = _post(default_policy, magic + os.urandom(40).hex())
    assert r.status == 403, (magic, r.status, r.body)
    msg = r.json()[0]["msg"]
    assert msg == f"policy: key {KEY['pkh']} may not sign {kind} (policy.default.allow)", msg


@pytest.mark.parametrize("magic", ["00", "01", "02", "06", "10", "14", "62", "74", "ff"])
def test_default_refuses_other_magic_bytes(default_policy, magic):
    r = _post(default_policy, magic + os.urandom(32).hex())
    assert r.status == 403, (magic, r.status, r.body)
    body = r.json()
    assert isinstance(body, list) and body and body[0].get("msg"), body
    # and keeps serving (identical consensus bytes get their stored signature back)
    message = bytes.fromhex(PREATTESTATION)
    tzcrypto.verify(KEY["pk"], h.sign(default_policy.server, KEY["pkh"], PREATTESTATION), message)


def test_config_widens_policy(launch):
    s = launch([KEY], config=(
        '[policy]\nallowed_magic_bytes = ["0x01", "0x03", "0x05"]\n'
        f'[policy.keys.{KEY["pkh"]}]\nallow = ["legacy_block", "generic_unchecked"]\n'))
    # A legacy (0x01) block header start: chain id, then a positive level.
    message = b"\x01" + bytes.fromhex("7a06a770") + (1000).to_bytes(4, "big") + os.urandom(24)
    tzcrypto.verify(KEY["pk"], h.sign(s.server, KEY["pkh"], message.hex()), message)
    # generic_unchecked signs 0x03 bytes that are not an operation, as octez-signer does.
    message = b"\x03" + os.urandom(8)
    tzcrypto.verify(KEY["pk"], h.sign(s.server, KEY["pkh"], message.hex()), message)
    # 0x05 passes the magic-byte list but not the key's policy.
    r = _post(s, "05" + os.urandom(8).hex())
    assert r.status == 403 and "may not sign michelson_data" in r.body.decode(), r.body
    # 0x11 is not in the global list any more.
    r = _post(s, h.payload("sig-req-block")["hex"])
    assert r.status == 403 and "policy.allowed_magic_bytes" in r.body.decode(), r.body


def test_0x04_never_signed_even_if_configured(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    h.import_key(data_dir, KEY["sk"])
    cfg = tmp_path / "tzkms.toml"
    cfg.write_text('[policy]\nallowed_magic_bytes = ["0x03", "0x04"]\n'
                   f'[policy.keys.{KEY["pkh"]}]\nallow = ["generic_unchecked"]\n')
    try:
        server = h.start_server(data_dir, extra_args=("--config", str(cfg)))
    except AssertionError as e:
        assert "exited" in str(e), e
        return  # refusing such a config at start is fine too
    try:
        r = h.request(f"{server.url}/keys/{KEY['pkh']}?version=3", "POST",
                      json.dumps("04" + os.urandom(16).hex()).encode(),
                      {"Content-Type": "application/json"})
        assert r.status == 403, (r.status, r.body)
    finally:
        server.stop()


def test_config_check_prints_the_effective_policy(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    h.import_key(data_dir, KEY["sk"])
    cfg = tmp_path / "tzkms.toml"
    cfg.write_text(f'[policy.keys.{KEY["pkh"]}]\nallow = ["attestation", "transaction"]\n'
                   'transaction_destinations = ["tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN"]\n')
    r = h.run_tzkms(["config", "check", "--config", str(cfg), "--data-dir", str(data_dir)])
    assert r.returncode == 0, r.stderr
    assert (f"key {KEY['pkh']}: policy.keys.{KEY['pkh']}: allow [attestation, transaction]; "
            "transaction_destinations [tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN]") in r.stdout, r.stdout
    assert "configuration OK" in r.stdout
    cfg.write_text('[policy.default]\nallow = ["transfer"]\n')
    r = h.run_tzkms(["config", "check", "--config", str(cfg), "--data-dir", str(data_dir)])
    assert r.returncode != 0 and 'unknown request kind "transfer"' in r.stderr, r.stderr
