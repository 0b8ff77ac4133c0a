"""Generic operations (0x03) forged by pytezos's local forger against the real
binary: every kind tzkms may sign that pytezos forges is signed for a key whose
policy allows it, the signature verifies with pytezos, and a key whose policy
does not allow it gets 403 naming the kind. The kinds no client sends a signer
(consensus contents, aggregates, anonymous operations, including the aggregates
and denunciations Taquito does not forge) are refused for every key, whatever
its policy. A smart-rollup operator key signs add_messages and
execute_outbox_message (the two rollup kinds pytezos forges) for its listed
rollup only."""

import json

import pytest
from pytezos.operation.forge import forge_operation_group

import tzcrypto
import tzkms_harness as h

ALL = h.vector_key("bootstrap1")
NOOP_ONLY = h.vector_key("bootstrap2")
REVEAL_ONLY = h.vector_key("bootstrap3")
BRANCH = "BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2"
KT1 = "KT1HqWsXrGbHWc9muqkApqWu64WsxCU3FoRf"
PAYOUTS = "tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN"
PAYLOAD_HASH = "vh1jDcx9YAtauZLZFQb4Wcx9XpRMjwCgqc5WsS6mTt5XaMpJPVun"
POP = h.load_vectors("signatures.json")["bls_proofs_of_possession"][0]
SOME_SIGNATURE = next(v["signature"] for v in h.load_vectors("signatures.json")["signatures"]
                      if v["signature"].startswith("edsig"))


def manager(kind, **extra):
    return {"kind": kind, "source": ALL["pkh"], "fee": "1270", "counter": "42",
            "gas_limit": "10600", "storage_limit": "300", **extra}


def inlined(kind, **extra):
    return {"branch": BRANCH, "operations": {"kind": kind, "slot": 3, "level": 100, "round": 0,
                                            "block_payload_hash": PAYLOAD_HASH, **extra},
            "signature": SOME_SIGNATURE}


# (kind tzkms names, pytezos contents)
OPERATIONS = [
    ("reveal", manager("reveal", public_key=ALL["pk"])),
    ("reveal", manager("reveal", public_key=POP["pk"], proof=POP["proof"])),
    ("transaction", manager("transaction", amount="1000000", destination=PAYOUTS)),
    ("transaction", manager("transaction", amount="0", destination=KT1,
                            parameters={"entrypoint": "transfer", "value": {"int": "5"}})),
    ("stake", manager("transaction", amount="1000000", destination=ALL["pkh"],
                      parameters={"entrypoint": "stake", "value": {"prim": "Unit"}})),
    ("set_delegate_parameters", manager(
        "transaction", amount="0", destination=ALL["pkh"],
        parameters={"entrypoint": "set_delegate_parameters",
                    "value": {"prim": "Pair", "args": [{"int": "4000000"},
                                                        {"prim": "Pair", "args": [{"int": "20000000"}, {"prim": "Unit"}]}]}})),
    ("origination", manager("origination", balance="0", delegate=PAYOUTS, script={
        "code": [{"prim": "parameter", "args": [{"prim": "unit"}]},
                 {"prim": "storage", "args": [{"prim": "unit"}]},
                 {"prim": "code", "args": [[{"prim": "CDR"}, {"prim": "NIL", "args": [{"prim": "operation"}]},
                                            {"prim": "PAIR"}]]}],
        "storage": {"prim": "Unit"}})),
    ("delegation", manager("delegation", delegate=PAYOUTS)),
    ("register_global_constant", manager("register_global_constant", value={"int": "7"})),
    ("transfer_ticket", manager("transfer_ticket", ticket_contents={"string": "x"},
                                ticket_ty={"prim": "string"}, ticket_ticketer=KT1, ticket_amount="2",
                                destination=KT1, entrypoint="default")),
    ("smart_rollup_add_messages", manager("smart_rollup_add_messages", message=["cafe", "00"])),
    ("smart_rollup_execute_outbox_message", manager(
        "smart_rollup_execute_outbox_message", rollup="sr16gW4duQ14BRJ1Yj4HzGxgxUsZXhU8j2S2",
        cemented_commitment="src12XQVa2CyQ7phoMmb9BnuuQLWLvjRsCJBr5pb6TJooUCPdwcJ2n", output_proof="0300")),
    ("failing_noop", {"kind": "failing_noop", "arbitrary": "hello"}),
]

# Forged by pytezos, refused for every key whatever its policy (never signed inside 0x03).
NEVER_SIGNED = [
    ("activate_account", {"kind": "activate_account", "pkh": ALL["pkh"],
                          "secret": "41f98b15efc63fa893d61d7d6eee4a2ce9427ac4"}),
    ("attestation_with_dal", {"kind": "attestation", "slot": 1, "level": 66299, "round": 5,
                              "block_payload_hash": PAYLOAD_HASH, "dal_attestation": 2048}),
    ("preattestations_aggregate", {"kind": "preattestations_aggregate",
                                   "consensus_content": {"level": 100, "round": 1, "block_payload_hash": PAYLOAD_HASH},
                                   "committee": [1, 7, 300]}),
    ("attestations_aggregate", {"kind": "attestations_aggregate",
                                "consensus_content": {"level": 100, "round": 1, "block_payload_hash": PAYLOAD_HASH},
                                "committee": [{"slot": 1}, {"slot": 7, "dal_attestation": 5}]}),
    ("double_consensus_operation_evidence", {
        "kind": "double_consensus_operation_evidence", "slot": 3,
        "op1": inlined("attestation"), "op2": inlined("attestation", round=1)}),
    ("preattestation", {"kind": "preattestation", "slot": 1, "level": 5, "round": 0,
                        "block_payload_hash": PAYLOAD_HASH}),
    ("attestation", {"kind": "attestation", "slot": 1, "level": 5, "round": 0,
                     "block_payload_hash": PAYLOAD_HASH}),
]

ETHERLINK = "sr1Ghq66tYK9y3r8CC1Tf8i8m5nxh8nTvZEf"
LISTED_ROLLUP = "sr16gW4duQ14BRJ1Yj4HzGxgxUsZXhU8j2S2"
OPERATOR = h.vector_key("bootstrap4")

SIGNABLE = sorted({k for k, _ in OPERATIONS})
CONFIG = "\n".join([
    f"[policy.keys.{ALL['pkh']}]",
    "allow = [%s]" % ", ".join(json.dumps(k) for k in SIGNABLE),
    f"[policy.keys.{NOOP_ONLY['pkh']}]",
    'allow = ["failing_noop"]',
    f"[policy.keys.{REVEAL_ONLY['pkh']}]",
    'allow = ["reveal"]',
    f"[policy.keys.{OPERATOR['pkh']}]",
    'allow = ["smart_rollup_add_messages", "smart_rollup_execute_outbox_message"]',
    f'smart_rollups = ["{LISTED_ROLLUP}"]',
    "",
])


@pytest.fixture(scope="module")
def signer(launch):
    return launch([ALL, NOOP_ONLY, REVEAL_ONLY, OPERATOR], config=CONFIG)


def _post(signer, key, message: bytes):
    return h.request(f"{signer.url}/keys/{key['pkh']}?version=3", "POST",
                     json.dumps(message.hex()).encode(), {"Content-Type": "application/json"})


@pytest.mark.parametrize("kind,content", OPERATIONS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(OPERATIONS)])
def test_pytezos_forged_operation_is_named_and_policed(signer, kind, content):
    message = b"\x03" + forge_operation_group({"branch": BRANCH, "contents": [content]})
    r = _post(signer, ALL, message)
    assert r.status == 200, (kind, r.status, r.body)
    tzcrypto.verify(ALL["pk"], r.json()["signature"], message)
    other = REVEAL_ONLY if kind == "failing_noop" else NOOP_ONLY
    r = _post(signer, other, message)
    assert r.status == 403, (kind, r.status, r.body)
    assert r.json()[0]["msg"] == (
        f"policy: key {other['pkh']} may not sign {kind} (policy.keys.{other['pkh']}.allow)"), r.body


def test_pytezos_batch_is_checked_operation_by_operation(signer):
    reveal = {**OPERATIONS[0][1], "source": REVEAL_ONLY["pkh"]}
    transfer = {**OPERATIONS[2][1], "source": REVEAL_ONLY["pkh"], "counter": "43"}
    message = b"\x03" + forge_operation_group({"branch": BRANCH, "contents": [reveal, transfer]})
    r = _post(signer, REVEAL_ONLY, message)
    assert r.status == 403 and "may not sign transaction" in r.json()[0]["msg"], r.body
    r = _post(signer, ALL, message)
    assert r.status == 200, r.body


@pytest.mark.parametrize("name,content", NEVER_SIGNED, ids=[k for k, _ in NEVER_SIGNED])
def test_pytezos_forged_never_signed_operation_is_refused_for_every_key(signer, name, content):
    message = b"\x03" + forge_operation_group({"branch": BRANCH, "contents": [content]})
    for key in (ALL, NOOP_ONLY, OPERATOR):
        r = _post(signer, key, message)
        assert r.status == 403, (name, r.status, r.body)
        msg = r.json()[0]["msg"]
        assert msg.startswith(f"policy: key {key['pkh']} may not sign operation 0, {name} (tag "), msg
        assert "whatever the policy says" in msg and msg.endswith("(never signed)"), msg


def test_pytezos_rollup_operator_signs_for_its_listed_rollup_only(signer):
    def outbox(rollup):
        return {**manager("smart_rollup_execute_outbox_message", rollup=rollup,
                          cemented_commitment="src12XQVa2CyQ7phoMmb9BnuuQLWLvjRsCJBr5pb6TJooUCPdwcJ2n",
                          output_proof="0300"), "source": OPERATOR["pkh"]}
    add = {**manager("smart_rollup_add_messages", message=["00" + "ab" * 20]), "source": OPERATOR["pkh"]}
    for content in (outbox(LISTED_ROLLUP), add):
        message = b"\x03" + forge_operation_group({"branch": BRANCH, "contents": [content]})
        r = _post(signer, OPERATOR, message)
        assert r.status == 200, (content["kind"], r.status, r.body)
        tzcrypto.verify(OPERATOR["pk"], r.json()["signature"], message)
    message = b"\x03" + forge_operation_group({"branch": BRANCH, "contents": [outbox(ETHERLINK)]})
    r = _post(signer, OPERATOR, message)
    assert r.status == 403, r.body
    assert r.json()[0]["msg"] == (
        f"policy: key {OPERATOR['pkh']} may not sign a smart_rollup_execute_outbox_message for rollup "
        f"{ETHERLINK} (policy.keys.{OPERATOR['pkh']}.smart_rollups)"), r.body
