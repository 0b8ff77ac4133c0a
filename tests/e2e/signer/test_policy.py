"""Magic-byte policy over HTTP: the default signs generic (0x03), Michelson
(0x05) and Tenderbake consensus (0x11, 0x12, 0x13) payloads and refuses other
magic bytes with 403; [policy] allowed_magic_bytes widens it; 0x04 is never
signed, whatever the config says."""

import json
import os

import pytest

import tzcrypto
import tzkms_harness as h

KEY = h.vector_key("bootstrap1")


@pytest.fixture(scope="module")
def default_policy(launch):
    return launch([KEY])


def _post(signer, hex_payload):
    return h.request(f"{signer.url}/keys/{KEY['pkh']}?version=3", "POST",
                     json.dumps(hex_payload).encode(), {"Content-Type": "application/json"})


@pytest.mark.parametrize("magic", ["03", "05"])
def test_default_signs(default_policy, magic):
    message = bytes.fromhex(magic) + os.urandom(32)
    sig = h.sign(default_policy.server, KEY["pkh"], message.hex())
    tzcrypto.verify(KEY["pk"], sig, message)


@pytest.mark.parametrize("magic", ["00", "01", "02", "06", "10", "14", "62", "74", "ff"])
def test_default_refuses_other_magic_bytes(default_policy, magic):
    r = _post(default_policy, magic + os.urandom(32).hex())
    assert r.status == 403, (magic, r.status, r.body)
    body = r.json()
    assert isinstance(body, list) and body and body[0].get("msg"), body
    # and keeps serving
    message = b"\x03" + os.urandom(8)
    tzcrypto.verify(KEY["pk"], h.sign(default_policy.server, KEY["pkh"], message.hex()), message)


def test_config_widens_policy(launch):
    s = launch([KEY], config='[policy]\nallowed_magic_bytes = ["0x01", "0x03"]\n')
    # A legacy (0x01) block header start: chain id, then a positive level.
    message = b"\x01" + bytes.fromhex("7a06a770") + (1000).to_bytes(4, "big") + os.urandom(24)
    tzcrypto.verify(KEY["pk"], h.sign(s.server, KEY["pkh"], message.hex()), message)
    # 0x05 is no longer in the list.
    assert _post(s, "05" + os.urandom(8).hex()).status == 403


def test_0x04_never_signed_even_if_configured(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    h.import_key(data_dir, KEY["sk"])
    cfg = tmp_path / "tzkms.toml"
    cfg.write_text('[policy]\nallowed_magic_bytes = ["0x03", "0x04"]\n')
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
