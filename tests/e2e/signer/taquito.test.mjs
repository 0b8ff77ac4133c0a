// End-to-end: Taquito's RemoteSigner against the real tzkms binary.
//
// A tzkms server is started with tz1, tz2 and tz3 file keys imported from the
// shared vectors. Taquito's RemoteSigner (which fetches the public key, checks
// that it hashes to the pkh, and verifies every returned signature itself)
// signs forged operation bytes with the generic 0x03 watermark. The result is
// verified again with @taquito/utils verifySignature and, for the deterministic
// curves, compared with Taquito's own InMemorySigner.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { HttpBackend } from '@taquito/http-utils';
import { LocalForger } from '@taquito/local-forging';
import { RemoteSigner } from '@taquito/remote-signer';
import { InMemorySigner } from '@taquito/signer';
import { b58cdecode, prefix, verifySignature } from '@taquito/utils';

import { importKey, makeDataDir, rmDataDir, startServer, vectorKey } from './lib/tzkms.mjs';

const GENERIC = new Uint8Array([3]);
const BRANCH = 'BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2';

// [vector id, signature prefix, deterministic]
const KEYS = [
  ['bootstrap1', 'edsig', true],
  ['hardcoded_secp256k1', 'spsig1', true],
  ['taquito-tz2', 'spsig1', true],
  ['hardcoded_p256', 'p2sig', false],
  ['taquito-tz3', 'p2sig', false],
];

const forger = new LocalForger();

async function forgeTransfer(source, publicKey, counter) {
  return forger.forge({
    branch: BRANCH,
    contents: [
      {
        kind: 'reveal',
        source,
        fee: '1270',
        counter: String(counter),
        gas_limit: '1000',
        storage_limit: '0',
        public_key: publicKey,
      },
      {
        kind: 'transaction',
        source,
        fee: '2000',
        counter: String(counter + 1),
        gas_limit: '2000',
        storage_limit: '0',
        amount: '1234567',
        destination: 'tz1gjaF81ZRRvdzjobyfVNsAeSC6PScjfQwN',
      },
    ],
  });
}

/** An HttpBackend that swaps every signature for a real one over other bytes (another branch). */
class TamperingBackend extends HttpBackend {
  constructor() {
    super();
    this.tampered = 0;
  }

  async createRequest(req, data) {
    const res = await super.createRequest(req, data);
    if (req.method === 'POST') {
      // Other bytes that tzkms still signs: the same operation on another branch.
      const otherBranch = data.slice(0, 4) + (data[4] === '0' ? '1' : '0') + data.slice(5);
      const other = await super.createRequest({ ...req, headers: {} }, otherBranch);
      assert.notEqual(other.signature, res.signature);
      this.tampered += 1;
      return { signature: other.signature };
    }
    return res;
  }
}

describe('Taquito RemoteSigner against tzkms', () => {
  let dataDir;
  let server;
  const pkhs = new Map();

  before(async () => {
    dataDir = makeDataDir();
    for (const [id] of KEYS) {
      const k = vectorKey(id);
      const pkh = await importKey(dataDir, k.sk, { alias: id });
      assert.equal(pkh, k.pkh, `tzkms keys import printed the pkh of ${id}`);
      pkhs.set(id, pkh);
    }
    // The default policy signs consensus payloads only; these keys sign reveals and transactions.
    server = await startServer(dataDir, { config: '[policy.default]\nallow = ["reveal", "transaction"]\n' });
  });

  after(async () => {
    if (server) {
      const exit = await server.stop();
      assert.equal(exit.code, 0, `tzkms serve exit after SIGTERM: ${JSON.stringify(exit)}`);
    }
    if (dataDir) rmDataDir(dataDir);
  });

  for (const [id, sigPrefix, deterministic] of KEYS) {
    describe(`${id} (${sigPrefix})`, () => {
      it('publicKeyHash() and publicKey() match the vector', async () => {
        const k = vectorKey(id);
        const signer = new RemoteSigner(k.pkh, server.url);
        assert.equal(await signer.publicKeyHash(), k.pkh);
        assert.equal(await signer.publicKey(), k.pk);
        await assert.rejects(signer.secretKey(), /Secret key cannot be exposed/);
      });

      it('signs forged operation bytes with the generic watermark and the result verifies', async () => {
        const k = vectorKey(id);
        const bytes = await forgeTransfer(k.pkh, k.pk, 1000);
        // RemoteSigner.sign: POST /keys/<pkh>, GET /keys/<pkh>, checks pk -> pkh,
        // verifySignature(03||bytes, pk, signature); throws on any mismatch.
        const signer = new RemoteSigner(k.pkh, server.url);
        const res = await signer.sign(bytes, GENERIC);

        assert.equal(res.bytes, bytes);
        assert.ok(res.prefixSig.startsWith(sigPrefix), `signature prefix: ${res.prefixSig}`);
        assert.ok(res.sig.startsWith('sig'), `generic signature: ${res.sig}`);
        const raw = Buffer.from(b58cdecode(res.prefixSig, prefix[sigPrefix === 'spsig1' ? 'spsig' : sigPrefix]));
        assert.equal(raw.length, 64);
        assert.equal(res.sbytes, bytes + raw.toString('hex'));

        // Independent checks with @taquito/utils.
        assert.equal(verifySignature(bytes, k.pk, res.prefixSig, GENERIC), true);
        assert.equal(verifySignature(`03${bytes}`, k.pk, res.prefixSig), true);
        assert.equal(verifySignature(res.bytes, k.pk, res.sig, GENERIC), true, 'generic sig form');
        // The watermark is part of what was signed.
        assert.equal(verifySignature(bytes, k.pk, res.prefixSig), false);
        assert.equal(verifySignature(`05${bytes}`, k.pk, res.prefixSig), false);

        if (sigPrefix === 'spsig1') {
          // secp256k1 signatures must be low-S.
          const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
          const s = BigInt(`0x${raw.subarray(32).toString('hex')}`);
          assert.ok(s <= n / 2n, 'secp256k1 signature is low-S');
        }
        if (deterministic) {
          const local = await new InMemorySigner(k.sk).sign(bytes, GENERIC);
          assert.equal(res.prefixSig, local.prefixSig, 'same signature as Taquito InMemorySigner');
        }
      });

      it('signs several distinct operations, each verified', async () => {
        const k = vectorKey(id);
        const signer = new RemoteSigner(k.pkh, server.url);
        const seen = new Set();
        for (let counter = 1; counter <= 5; counter += 1) {
          const bytes = await forgeTransfer(k.pkh, k.pk, counter * 7);
          const res = await signer.sign(bytes, GENERIC);
          assert.equal(verifySignature(bytes, k.pk, res.prefixSig, GENERIC), true);
          seen.add(res.prefixSig);
        }
        assert.equal(seen.size, 5);
      });

      it("Taquito's own verification rejects a signature over other bytes", async () => {
        // Proves that RemoteSigner really verifies what the server returns:
        // the backend swaps the signature for a genuine tzkms signature by the
        // same key over different bytes, and sign() must throw.
        const k = vectorKey(id);
        const http = new TamperingBackend();
        const signer = new RemoteSigner(k.pkh, server.url, {}, http);
        const bytes = await forgeTransfer(k.pkh, k.pk, 4242);
        await assert.rejects(signer.sign(bytes, GENERIC), (e) => {
          assert.equal(e.name, 'SignatureVerificationFailedError');
          return true;
        });
        assert.equal(http.tampered, 1);
      });
    });
  }

  describe('errors as Taquito sees them', () => {
    it('an unserved pkh gives PublicKeyNotFoundError (404)', async () => {
      const k = vectorKey('bootstrap2');
      const signer = new RemoteSigner(k.pkh, server.url);
      await assert.rejects(signer.publicKey(), (e) => {
        assert.equal(e.name, 'PublicKeyNotFoundError');
        assert.equal(e.cause?.status, 404);
        return true;
      });
      await assert.rejects(signer.sign('0011', GENERIC), (e) => {
        assert.equal(e.name, 'PublicKeyNotFoundError');
        assert.equal(e.cause?.status, 404);
        return true;
      });
    });

    it('a 0x04 payload gives OperationNotAuthorized (403)', async () => {
      const k = vectorKey('bootstrap1');
      const signer = new RemoteSigner(k.pkh, server.url);
      await assert.rejects(signer.sign('0101020304', new Uint8Array([4])), (e) => {
        assert.equal(e.name, 'OperationNotAuthorized');
        assert.equal(e.cause?.status, 403);
        const body = JSON.parse(e.cause.body);
        assert.ok(Array.isArray(body) && body.length > 0, `error list: ${e.cause.body}`);
        return true;
      });
    });

    it('still signs after the errors', async () => {
      const k = vectorKey('hardcoded_p256');
      const signer = new RemoteSigner(k.pkh, server.url);
      const bytes = await forgeTransfer(k.pkh, k.pk, 99);
      const res = await signer.sign(bytes, GENERIC);
      assert.equal(verifySignature(bytes, k.pk, res.prefixSig, GENERIC), true);
    });
  });
});
