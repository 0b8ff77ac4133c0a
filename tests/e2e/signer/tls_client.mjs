// Taquito's RemoteSigner as a one-shot client for test_security.py: node tls_client.mjs URL PKH HEX
// (HEX is a whole payload, magic byte first). Trust comes from NODE_EXTRA_CA_CERTS. Prints
// {"public_key", "signature"} or {"error", "status"} as JSON.
import { RemoteSigner } from '@taquito/remote-signer';

const [url, pkh, hex] = process.argv.slice(2);
const signer = new RemoteSigner(pkh, url);
try {
  const publicKey = await signer.publicKey();
  const res = await signer.sign(hex.slice(2), new Uint8Array([parseInt(hex.slice(0, 2), 16)]));
  console.log(JSON.stringify({ public_key: publicKey, signature: res.prefixSig }));
} catch (e) {
  console.log(JSON.stringify({ error: e.name, message: String(e.message ?? e), status: e.cause?.status ?? e.status ?? null }));
}
