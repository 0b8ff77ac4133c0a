// Generic operations (0x03) forged by Taquito's local forger (@taquito/local-forging 25, which knows
// protocol 025 Ushuaia) against the real tzkms binary: every operation kind tzkms decodes and Taquito
// forges is signed for a key whose policy allows it (the signature verifies), and refused with 403
// naming the kind for a key whose policy does not. The kinds no client sends a signer (consensus
// contents, anonymous operations) are refused for every key whatever its policy. Transaction
// destinations, ballot values and smart-rollup addresses are checked against their allow-lists: a
// rollup operator signs the three rollup kinds Taquito forges (originate, add_messages,
// execute_outbox_message) for its listed rollup only.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { LocalForger } from '@taquito/local-forging';
import { RemoteSigner } from '@taquito/remote-signer';
import { verifySignature } from '@taquito/utils';

import { importKey, loadVectors, makeDataDir, rmDataDir, startServer, vectorKey } from './lib/tzkms.mjs';

const GENERIC = new Uint8Array([3]);
const BRANCH = 'BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2';
const KT1 = 'KT1HqWsXrGbHWc9muqkApqWu64WsxCU3FoRf';
const PAYOUTS = 'tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN';
const STRANGER = 'tz1faswCTDciRzE4oJ9jn2Vm2dvjeyA9fUzU';
const PROTOCOL = 'PsUshuai9QapM5TGj1JpuVGkdxz5GykdnEvS6Rh8SUVrARvZLCY';

const ALL = vectorKey('bootstrap1'); // may sign every kind below
const NOOP_ONLY = vectorKey('bootstrap2'); // may sign failing_noop only
const REVEAL_ONLY = vectorKey('bootstrap3'); // may sign reveal only
const LISTS = vectorKey('bootstrap4'); // transactions to PAYOUTS, ballots yay/pass
const OPERATOR = vectorKey('bootstrap5'); // the three rollup kinds, for LISTED_ROLLUP only
const LISTED_ROLLUP = 'sr16gW4duQ14BRJ1Yj4HzGxgxUsZXhU8j2S2';
const ETHERLINK = 'sr1Ghq66tYK9y3r8CC1Tf8i8m5nxh8nTvZEf';

const pop = loadVectors('signatures.json').bls_proofs_of_possession[0];

function manager(source, extra) {
  return { source, fee: '1270', counter: '42', gas_limit: '10600', storage_limit: '300', ...extra };
}

/** [kind tzkms names, Taquito contents] for every kind both sides know. */
function operations(src) {
  return [
    ['reveal', { kind: 'reveal', ...manager(src, { public_key: ALL.pk }) }],
    ['transaction', { kind: 'transaction', ...manager(src, { amount: '1000000', destination: PAYOUTS }) }],
    ['transaction', {
      kind: 'transaction',
      ...manager(src, { amount: '0', destination: KT1, parameters: { entrypoint: 'transfer', value: { int: '5' } } }),
    }],
    ['stake', {
      kind: 'transaction',
      ...manager(src, { amount: '1000000', destination: src, parameters: { entrypoint: 'stake', value: { prim: 'Unit' } } }),
    }],
    ['unstake', {
      kind: 'transaction',
      ...manager(src, { amount: '5', destination: src, parameters: { entrypoint: 'unstake', value: { prim: 'Unit' } } }),
    }],
    ['finalize_unstake', {
      kind: 'transaction',
      ...manager(src, { amount: '0', destination: src, parameters: { entrypoint: 'finalize_unstake', value: { prim: 'Unit' } } }),
    }],
    ['origination', {
      kind: 'origination',
      ...manager(src, {
        balance: '0',
        script: {
          code: [
            { prim: 'parameter', args: [{ prim: 'unit' }] },
            { prim: 'storage', args: [{ prim: 'unit' }] },
            { prim: 'code', args: [[{ prim: 'CDR' }, { prim: 'NIL', args: [{ prim: 'operation' }] }, { prim: 'PAIR' }]] },
          ],
          storage: { prim: 'Unit' },
        },
      }),
    }],
    ['delegation', { kind: 'delegation', ...manager(src, { delegate: PAYOUTS }) }],
    ['delegation', { kind: 'delegation', ...manager(src, {}) }],
    ['ballot', { kind: 'ballot', source: src, period: 12, proposal: PROTOCOL, ballot: 'yay' }],
    ['proposals', { kind: 'proposals', source: src, period: 12, proposals: [PROTOCOL] }],
    ['set_deposits_limit', { kind: 'set_deposits_limit', ...manager(src, { limit: '5000' }) }],
    ['increase_paid_storage', { kind: 'increase_paid_storage', ...manager(src, { amount: '10', destination: KT1 }) }],
    ['update_consensus_key', { kind: 'update_consensus_key', ...manager(src, { pk: ALL.pk }) }],
    ['update_consensus_key', { kind: 'update_consensus_key', ...manager(src, { pk: pop.pk, proof: pop.proof }) }],
    ['update_companion_key', { kind: 'update_companion_key', ...manager(src, { pk: pop.pk, proof: pop.proof }) }],
    ['drain_delegate', { kind: 'drain_delegate', consensus_key: src, delegate: PAYOUTS, destination: src }],
    ['failing_noop', { kind: 'failing_noop', arbitrary: 'cafe' }],
    ['register_global_constant', { kind: 'register_global_constant', ...manager(src, { value: { prim: 'Unit' } }) }],
    ['transfer_ticket', {
      kind: 'transfer_ticket',
      ...manager(src, {
        ticket_contents: { string: 'x' }, ticket_ty: { prim: 'string' }, ticket_ticketer: KT1,
        ticket_amount: '2', destination: KT1, entrypoint: 'default',
      }),
    }],
    ['smart_rollup_originate', {
      kind: 'smart_rollup_originate',
      ...manager(src, { pvm_kind: 'wasm_2_0_0', kernel: '0061736d0100000001280760037f7f7f017f60', parameters_ty: { prim: 'bytes' } }),
    }],
    ['smart_rollup_add_messages', { kind: 'smart_rollup_add_messages', ...manager(src, { message: ['0000000031', 'cafe'] }) }],
    ['smart_rollup_execute_outbox_message', {
      kind: 'smart_rollup_execute_outbox_message',
      ...manager(src, {
        rollup: 'sr16gW4duQ14BRJ1Yj4HzGxgxUsZXhU8j2S2',
        cemented_commitment: 'src12XQVa2CyQ7phoMmb9BnuuQLWLvjRsCJBr5pb6TJooUCPdwcJ2n',
        output_proof: '0300',
      }),
    }],
    ['dal_publish_commitment', {
      kind: 'dal_publish_commitment',
      ...manager(src, {
        slot_header: {
          slot_index: 3,
          commitment: 'sh1PVaYXozjkWy2zRqLJmnmnHLLrjpG8pQy9cVungQYvzWBXNyAbDTuSNNRJUUt5Ac7kj2jQrg',
          commitment_proof: '8f'.repeat(96),
        },
      }),
    }],
  ];
}

/** [name in the refusal, Taquito contents] for the kinds never signed inside 0x03. */
function neverSigned(src) {
  const consensus = { slot: 1, level: 66299, round: 5, block_payload_hash: 'vh1jDcx9YAtauZLZFQb4Wcx9XpRMjwCgqc5WsS6mTt5XaMpJPVun' };
  return [
    ['seed_nonce_revelation', { kind: 'seed_nonce_revelation', level: 25550, nonce: 'ab'.repeat(32) }],
    ['activate_account', { kind: 'activate_account', pkh: src, secret: '41f98b15efc63fa893d61d7d6eee4a2ce9427ac4' }],
    ['attestation_with_dal', { kind: 'attestation_with_dal', ...consensus, dal_attestation: '5' }],
    ['attestation', { kind: 'attestation', ...consensus }],
  ];
}

const SIGNABLE = [...new Set(operations(ALL.pkh).map(([k]) => k)), 'set_delegate_parameters'];

const CONFIG = `
[policy.keys.${ALL.pkh}]
allow = [${SIGNABLE.map((k) => JSON.stringify(k)).join(', ')}]

[policy.keys.${NOOP_ONLY.pkh}]
allow = ["failing_noop"]

[policy.keys.${REVEAL_ONLY.pkh}]
allow = ["reveal"]

[policy.keys.${LISTS.pkh}]
allow = ["transaction", "ballot"]
transaction_destinations = ["${PAYOUTS}", "${KT1}"]
ballots = ["yay", "pass"]

[policy.keys.${OPERATOR.pkh}]
allow = ["smart_rollup_originate", "smart_rollup_add_messages", "smart_rollup_execute_outbox_message"]
smart_rollups = ["${LISTED_ROLLUP}"]
`;

const forger = new LocalForger();
const forge = (contents) => forger.forge({ branch: BRANCH, contents: Array.isArray(contents) ? contents : [contents] });

async function refusal(key, bytes) {
  const signer = new RemoteSigner(key.pkh, server.url);
  let error;
  await assert.rejects(signer.sign(bytes, GENERIC), (e) => {
    error = e;
    return true;
  });
  assert.equal(error.name, 'OperationNotAuthorized', String(error));
  assert.equal(error.cause?.status, 403);
  return JSON.parse(error.cause.body)[0].msg;
}

async function signs(key, bytes) {
  const signer = new RemoteSigner(key.pkh, server.url);
  const res = await signer.sign(bytes, GENERIC);
  assert.equal(verifySignature(res.bytes, key.pk, res.prefixSig, GENERIC), true);
}

let server;
let dataDir;

describe('generic operations forged by Taquito', () => {
  before(async () => {
    dataDir = makeDataDir();
    for (const k of [ALL, NOOP_ONLY, REVEAL_ONLY, LISTS, OPERATOR]) {
      assert.equal(await importKey(dataDir, k.sk), k.pkh);
    }
    server = await startServer(dataDir, { config: CONFIG });
  });

  after(async () => {
    if (server) assert.equal((await server.stop()).code, 0);
    if (dataDir) rmDataDir(dataDir);
  });

  for (const [kind, contents] of operations(ALL.pkh)) {
    it(`${kind} (${contents.kind}${contents.parameters ? ` %${contents.parameters.entrypoint}` : ''}) is named, signed when allowed and refused otherwise`, async () => {
      const bytes = await forge(contents);
      await signs(ALL, bytes);
      const other = kind === 'failing_noop' ? REVEAL_ONLY : NOOP_ONLY;
      const msg = await refusal(other, bytes);
      assert.equal(msg, `policy: key ${other.pkh} may not sign ${kind} (policy.keys.${other.pkh}.allow)`);
    });
  }

  it('a batch is refused for the first kind the key may not sign', async () => {
    const [, reveal] = operations(REVEAL_ONLY.pkh)[0];
    const [, transfer] = operations(REVEAL_ONLY.pkh)[1];
    await signs(REVEAL_ONLY, await forge([reveal]));
    const msg = await refusal(REVEAL_ONLY, await forge([reveal, { ...transfer, counter: '43' }]));
    assert.match(msg, /may not sign transaction/);
  });

  for (const [name, contents] of neverSigned(ALL.pkh)) {
    it(`${name} inside a generic operation is refused for every key, whatever its policy`, async () => {
      const bytes = await forge(contents);
      for (const key of [ALL, NOOP_ONLY, OPERATOR]) {
        const msg = await refusal(key, bytes);
        assert.ok(msg.startsWith(`policy: key ${key.pkh} may not sign operation 0, ${name} (tag `), msg);
        assert.ok(msg.includes('whatever the policy says') && msg.endsWith('(never signed)'), msg);
      }
    });
  }

  it('a rollup operator signs originate, add_messages and execute_outbox_message for its listed rollup only', async () => {
    const [, originate] = operations(OPERATOR.pkh).find(([k]) => k === 'smart_rollup_originate');
    const [, add] = operations(OPERATOR.pkh).find(([k]) => k === 'smart_rollup_add_messages');
    const outbox = (rollup) => ({
      kind: 'smart_rollup_execute_outbox_message',
      ...manager(OPERATOR.pkh, {
        rollup,
        cemented_commitment: 'src12XQVa2CyQ7phoMmb9BnuuQLWLvjRsCJBr5pb6TJooUCPdwcJ2n',
        output_proof: '0300',
      }),
    });
    await signs(OPERATOR, await forge(originate));
    await signs(OPERATOR, await forge(add));
    await signs(OPERATOR, await forge(outbox(LISTED_ROLLUP)));
    const msg = await refusal(OPERATOR, await forge(outbox(ETHERLINK)));
    assert.equal(
      msg,
      `policy: key ${OPERATOR.pkh} may not sign a smart_rollup_execute_outbox_message for rollup ${ETHERLINK} (policy.keys.${OPERATOR.pkh}.smart_rollups)`,
    );
  });

  it('transactions go only to listed destinations', async () => {
    const to = (destination) => ({ kind: 'transaction', ...manager(LISTS.pkh, { amount: '7', destination }) });
    await signs(LISTS, await forge(to(PAYOUTS)));
    await signs(LISTS, await forge(to(KT1)));
    const msg = await refusal(LISTS, await forge(to(STRANGER)));
    assert.equal(
      msg,
      `policy: key ${LISTS.pkh} may not send a transaction to ${STRANGER} (policy.keys.${LISTS.pkh}.transaction_destinations)`,
    );
  });

  it('ballots carry only listed votes', async () => {
    const vote = (ballot) => ({ kind: 'ballot', source: LISTS.pkh, period: 3, proposal: PROTOCOL, ballot });
    await signs(LISTS, await forge(vote('yay')));
    await signs(LISTS, await forge(vote('pass')));
    const msg = await refusal(LISTS, await forge(vote('nay')));
    assert.equal(msg, `policy: key ${LISTS.pkh} may not vote nay (policy.keys.${LISTS.pkh}.ballots)`);
  });
});
