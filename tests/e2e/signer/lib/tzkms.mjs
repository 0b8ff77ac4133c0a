// Helpers to drive the real tzkms binary from node tests: import keys into a
// temporary data directory, start `tzkms serve` on an ephemeral port (the port
// is read from the "listening on http://..." line, never guessed or slept for),
// and stop it with SIGTERM.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// lib -> signer -> e2e -> tests -> repository root
export const repoRoot = path.resolve(here, '..', '..', '..', '..');
export const vectorsDir = process.env.TZKMS_VECTORS
  ? path.resolve(process.env.TZKMS_VECTORS)
  : path.resolve(repoRoot, '..', 'shared', 'vectors');

function defaultBin() {
  if (process.env.TZKMS_BIN) return path.resolve(process.env.TZKMS_BIN);
  const release = path.join(repoRoot, 'target', 'release', 'tzkms');
  const debug = path.join(repoRoot, 'target', 'debug', 'tzkms');
  return existsSync(release) || !existsSync(debug) ? release : debug;
}
export const tzkmsBin = defaultBin();

const STARTUP_TIMEOUT_MS = Number(process.env.TZKMS_STARTUP_TIMEOUT_MS ?? 30000);
const COMMAND_TIMEOUT_MS = 60000;

export function loadVectors(name) {
  return JSON.parse(readFileSync(path.join(vectorsDir, name), 'utf8'));
}

/** Looks a key up by id in keys.json (well_known_keys, other_keys). */
export function vectorKey(id) {
  const keys = loadVectors('keys.json');
  const k = [...keys.well_known_keys, ...keys.other_keys].find((x) => x.id === id);
  if (!k) throw new Error(`no key ${id} in keys.json`);
  return k;
}

export function makeDataDir() {
  return mkdtempSync(path.join(os.tmpdir(), 'tzkms-e2e-node-'));
}

/** Runs tzkms with args, feeding stdin; resolves {code, stdout, stderr}. */
export function runTzkms(args, { input = '', env = {}, timeoutMs = COMMAND_TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(tzkmsBin, args, {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tzkms ${args.join(' ')} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/**
 * `tzkms keys import`: returns the pkh printed on stdout's first line. An imported key signs consensus
 * only once something vouches for its past: with `neverSigned` (the default: these test keys signed
 * nothing before), `tzkms watermark floor <pkh> --level 0` does.
 */
export async function importKey(dataDir, sk, { password, alias, neverSigned = true } = {}) {
  const args = ['keys', 'import', '--data-dir', dataDir];
  if (alias) args.push('--alias', alias);
  const env = password === undefined ? {} : { TZKMS_KEY_PASSWORD: password };
  const r = await runTzkms(args, { input: `${sk}\n`, env });
  if (r.code !== 0) {
    throw new Error(`tzkms keys import failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
  }
  const pkh = r.stdout.split('\n')[0].trim();
  if (neverSigned) {
    const f = await runTzkms(['watermark', 'floor', pkh, '--level', '0', '--data-dir', dataDir]);
    if (f.code !== 0) throw new Error(`tzkms watermark floor failed (exit ${f.code}): ${f.stderr}`);
  }
  return pkh;
}

const live = new Set();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Starts `tzkms serve --data-dir DIR --listen 127.0.0.1:0` and resolves once it
 * printed its "listening on http://..." line (and, with `https`, its
 * "listening on https://..." line too). `config` is TOML text written beside
 * the data directory and passed with --config. Returns {url, httpsUrl, stop, output}.
 */
export function startServer(dataDir, { env = {}, extraArgs = [], config, https = false } = {}) {
  const args = ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', ...extraArgs];
  if (config !== undefined) {
    const configPath = `${dataDir}.toml`;
    writeFileSync(configPath, config);
    args.push('--config', configPath);
  }
  const child = spawn(
    tzkmsBin,
    args,
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  live.add(child);
  const output = { stdout: '', stderr: '' };
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(child);
      resolve(exited);
    });
  });
  child.stderr.on('data', (d) => (output.stderr += d));
  const lines = readline.createInterface({ input: child.stdout });
  return new Promise((resolve, reject) => {
    const fail = (why) => {
      child.kill('SIGKILL');
      reject(new Error(`tzkms serve ${why}\nstdout:\n${output.stdout}\nstderr:\n${output.stderr}`));
    };
    const timer = setTimeout(() => fail(`printed no "listening on" line within ${STARTUP_TIMEOUT_MS} ms`), STARTUP_TIMEOUT_MS);
    let ready = false;
    let http = null;
    let httpsUrl = null;
    lines.on('line', (line) => {
      output.stdout += `${line}\n`;
      const m = /^listening on (http:\/\/127\.0\.0\.1:(\d+))\s*$/.exec(line);
      if (m) http = m;
      const t = /^listening on (https:\/\/127\.0\.0\.1:\d+)\s*$/.exec(line);
      if (t) httpsUrl = t[1];
      if (!ready && http && (!https || httpsUrl)) {
        const m = http;
        ready = true;
        clearTimeout(timer);
        resolve({
          url: m[1],
          httpsUrl,
          port: Number(m[2]),
          output,
          child,
          async stop(timeoutMs = 10000) {
            if (exited) return exited;
            child.kill('SIGTERM');
            let timer;
            const t = new Promise((r) => {
              timer = setTimeout(() => r(null), timeoutMs);
            });
            const res = await Promise.race([exitPromise, t]);
            clearTimeout(timer);
            if (res === null) {
              child.kill('SIGKILL');
              throw new Error(`tzkms serve did not exit within ${timeoutMs} ms of SIGTERM`);
            }
            return res;
          },
        });
      }
    });
    exitPromise.then((e) => {
      if (!ready) {
        clearTimeout(timer);
        fail(`exited before listening (code ${e.code}, signal ${e.signal})`);
      }
    });
  });
}

export function rmDataDir(dir) {
  rmSync(dir, { recursive: true, force: true });
}
