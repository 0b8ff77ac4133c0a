#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets from ../shared/vectors and the repository's examples."""
import json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
vectors = os.path.join(here, "..", "..", "shared", "vectors")
out = os.path.join(here, "corpus")

def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

payloads = json.load(open(os.path.join(vectors, "payloads.json")))
sigs = json.load(open(os.path.join(vectors, "signatures.json")))
keys = json.load(open(os.path.join(vectors, "keys.json")))
for p in payloads["payloads"]:
    put("classify", p["id"], bytes.fromhex(p["hex"]))
    if p["hex"].startswith("03"):
        put("operation", p["id"], bytes.fromhex(p["hex"])[1:])
for v in sigs["signatures"]:
    if v["message_hex"].startswith("03") and len(v["message_hex"]) > 70:
        put("operation", v["id"], bytes.fromhex(v["message_hex"])[1:])
    put("request_body", p["id"], json.dumps(p["hex"]))
for s in payloads["watermark_sequences"]:
    for i, step in enumerate(s["steps"]):
        put("classify", f"seq-{i}-{step['blake2b_256'][:8]}", bytes.fromhex(step["hex"]))
n = 0
for v in sigs["signatures"]:
    for field in ("sk", "pk", "pkh", "signature", "signature_generic"):
        if v.get(field):
            put("base58", f"s{n}", v[field]); n += 1
for e in sigs["encrypted_keys"]:
    put("base58", f"s{n}", e["esk"]); n += 1
for c in keys["chain_ids"]:
    put("base58", f"s{n}", c["b58"]); n += 1
put("config", "example", open(os.path.join(here, "..", "examples", "tzkms.toml")).read())
put("config", "empty", "")
put("watermark_file", "one", json.dumps({"format": "tzkms-watermarks", "version": 1, "marks": [
    {"chain": "NetXdQprcVkpaWU", "pkh": "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx", "kind": "block", "level": 5,
     "round": 0, "hash": "11" * 32, "signature": sigs["signatures"][0]["signature_generic"]}]}))
print("seeded", out, file=sys.stderr)
