"""High watermark over HTTP (payloads.json watermark_sequences): each step gets
the expected status, an identical replay returns the stored signature (for
P-256, whose signatures are randomised, that proves it is the stored one), a
refusal is 409 with the Octez error list, and the marks survive a restart."""

import pytest

import tzcrypto
import tzkms_harness as h

SEQUENCES = h.load_vectors("payloads.json")["watermark_sequences"]
KEY_IDS = ["bootstrap1", "hardcoded_p256"]


@pytest.mark.parametrize("key_id", KEY_IDS)
@pytest.mark.parametrize("seq", SEQUENCES, ids=[s["name"] for s in SEQUENCES])
def test_sequence(launch, seq, key_id):
    k = h.vector_key(key_id)
    s = launch([k])
    signed = {}
    for i, step in enumerate(seq["steps"]):
        r = h.request(f"{s.url}/keys/{k['pkh']}?version=3", "POST",
                      f'"{step["hex"]}"'.encode(), {"Content-Type": "application/json"})
        what = f"step {i} ({step['note']})"
        assert r.status == step["expect_status"], f"{what}: {r.status} {r.body!r}"
        if r.status == 200:
            sig = r.json()["signature"]
            tzcrypto.verify(k["pk"], sig, bytes.fromhex(step["hex"]))
            if step["hex"] in signed:
                assert sig == signed[step["hex"]], f"{what}: identical replay gave a new signature"
            signed[step["hex"]] = sig
        else:
            body = r.json()
            assert isinstance(body, list) and body and body[0].get("msg"), body


def test_marks_survive_restart(launch):
    k = h.vector_key("hardcoded_p256")
    seq = next(s for s in SEQUENCES if s["key_kind"] == "block")
    first, conflicting = seq["steps"][0], seq["steps"][1]
    assert first["expect_status"] == 200 and conflicting["expect_status"] == 409
    s = launch([k])
    sig = h.sign(s.server, k["pkh"], first["hex"])
    assert s.server.stop() == 0
    again = h.start_server(s.server.data_dir)
    try:
        r = h.request(f"{again.url}/keys/{k['pkh']}?version=3", "POST",
                      f'"{conflicting["hex"]}"'.encode(), {"Content-Type": "application/json"})
        assert r.status == 409, (r.status, r.body)
        assert h.sign(again, k["pkh"], first["hex"]) == sig, "stored signature after restart"
    finally:
        again.stop()
