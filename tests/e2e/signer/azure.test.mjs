// End-to-end: the real tzkms binary with its Azure Key Vault backend, against the real kv-emulator binary
// over HTTPS, driven by Taquito's RemoteSigner for tz2 (P-256K) and tz3 (P-256) vault keys.
//
// The keys are created in the emulated vault by `tzkms azure keys create` (non-exportable EC-HSM keys);
// Taquito fetches each public key, checks it hashes to the address, signs forged operation bytes and
// verifies every returned signature itself. Key Vault's ECDSA is randomised (and often high-S for
// secp256k1), so signatures are verified, never compared.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';

import { LocalForger } from '@taquito/local-forging';
import { RemoteSigner } from '@taquito/remote-signer';
import { b58cdecode, prefix, verifySignature } from '@taquito/utils';

import { makeDataDir, repoRoot, rmDataDir, runTzkms, startServer } from './lib/tzkms.mjs';

const emulatorBin = process.env.KV_EMULATOR_BIN
  ? path.resolve(process.env.KV_EMULATOR_BIN)
  : path.join(repoRoot, 'target', existsSync(path.join(repoRoot, 'target', 'release', 'kv-emulator')) ? 'release' : 'debug', 'kv-emulator');
const SECRET = 'e2e-client-secret';
const GENERIC = new Uint8Array([3]);
const BRANCH = 'BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2';

/** Starts kv-emulator on free ports and resolves with the name=value lines it prints. */
function startEmulator(dir) {
  const child = spawn(
    emulatorBin,
    ['--listen', '127.0.0.1:0', '--identity-listen', '127.0.0.1:0', '--ca-file', path.join(dir, 'ca.pem'),
      '--client-secret', SECRET],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const info = {};
  const lines = readline.createInterface({ input: child.stdout });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('kv-emulator did not start')); }, 30000);
    child.on('exit', (code) => reject(new Error(`kv-emulator exited (${code})`)));
    lines.on('line', (line) => {
      const i = line.indexOf('=');
      if (i > 0) info[line.slice(0, i)] = line.slice(i + 1);
      if (line.startsWith('challenge=')) {
        clearTimeout(timer);
        resolve({ child, info });
      }
    });
  });
}

describe('Taquito RemoteSigner against tzkms with Azure Key Vault keys (kv-emulator)', () => {
  let dir;
  let emu;
  let server;
  let config;
  const keys = {};

  before(async () => {
    dir = makeDataDir();
    emu = await startEmulator(dir);
    const secretFile = path.join(dir, 'azure-secret');
    writeFileSync(secretFile, SECRET, { mode: 0o600 });
    config = path.join(dir, 'tzkms.toml');
    writeFileSync(config, [
      // The default policy signs consensus payloads only; these keys also sign operations.
      '[policy.default]', 'allow = ["block", "preattestation", "attestation", "reveal", "transaction"]', '',
      '[keys]', 'generate_if_empty = false', '',
      '[azure]', `vault_url = "${emu.info.vault_url}"`, `ca_file = "${emu.info.ca_file}"`, '',
      '[azure.credential]', 'kind = "client_secret"', `tenant_id = "${emu.info.tenant_id}"`,
      `client_id = "${emu.info.client_id}"`, `client_secret_file = "${secretFile}"`,
      `authority_host = "${emu.info.authority_host}"`, '',
    ].join('\n'));
    const data = path.join(dir, 'data');
    for (const [name, curve] of [['baker-tz3', 'p256'], ['baker-tz2', 'secp256k1']]) {
      const r = await runTzkms(['--config', config, '--data-dir', data, 'azure', 'keys', 'create', '--name', name, '--curve', curve]);
      assert.equal(r.code, 0, r.stderr);
      keys[curve] = r.stdout.split('\n')[0].trim();
    }
    assert.match(keys.p256, /^tz3/);
    assert.match(keys.secp256k1, /^tz2/);
    server = await startServer(data, { extraArgs: ['--config', config] });
  });

  after(async () => {
    if (server) assert.equal((await server.stop()).code, 0);
    if (emu) emu.child.kill('SIGTERM');
    if (dir) rmDataDir(dir);
  });

  for (const [curve, sigPrefix] of [['p256', 'p2sig'], ['secp256k1', 'spsig1']]) {
    it(`signs operations with the ${curve} vault key and the signature verifies`, async () => {
      const pkh = keys[curve];
      const signer = new RemoteSigner(pkh, server.url);
      assert.equal(await signer.publicKeyHash(), pkh);
      const pk = await signer.publicKey();
      const forger = new LocalForger();
      for (let counter = 1; counter <= 5; counter += 1) {
        const bytes = await forger.forge({
          branch: BRANCH,
          contents: [{
            kind: 'transaction', source: pkh, fee: '2000', counter: String(counter), gas_limit: '2000',
            storage_limit: '0', amount: String(1000 + counter), destination: 'tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN',
          }],
        });
        // RemoteSigner.sign verifies the returned signature against the public key and throws otherwise.
        const signed = await signer.sign(bytes, GENERIC);
        assert.ok(signed.prefixSig.startsWith(sigPrefix), signed.prefixSig);
        assert.ok(verifySignature(`03${bytes}`, pk, signed.prefixSig));
        if (curve === 'secp256k1') {
          const raw = b58cdecode(signed.prefixSig, prefix.spsig);
          const n = BigInt('0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141');
          const s = BigInt(`0x${Buffer.from(raw.slice(32)).toString('hex')}`);
          assert.ok(s <= n / 2n, 'secp256k1 signature must be low-S');
        }
      }
    });
  }
});
