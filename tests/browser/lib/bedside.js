// Starts the real `bedside` binary for a test: its own temp SQLite file, its own API key,
// an ephemeral port read back from its "bedside listening on" line. Also a tiny client
// for the REST calls a clinic backend would make.

import { spawn } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const KEY_ID = 'browser-test';
const KEY_SECRET = 'browser-test-secret-0123456789';

export async function startBedside({ env = {} } = {}) {
  const bin = process.env.BEDSIDE_BIN ?? join(repoRoot, 'target/debug/bedside');
  const dir = await mkdtemp(join(tmpdir(), 'bedside-browser-'));
  // The harness's own variable is not a setting: Bedside refuses unknown BEDSIDE_* ones.
  const { BEDSIDE_BIN: _, ...inherited } = process.env;
  const child = spawn(bin, [], {
    env: {
      ...inherited,
      BEDSIDE_LISTEN: '127.0.0.1:0',
      BEDSIDE_DATABASE_URL: `sqlite://${join(dir, 'bedside.db')}`,
      BEDSIDE_API_KEYS: `${KEY_ID}:${KEY_SECRET}`,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise((done) => child.once('exit', (code, signal) => done({ code, signal })));
  const url = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`bedside did not start within 20 s:\n${output}`)), 20_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      fail(new Error(`cannot start ${bin} (build it with cargo build, or set BEDSIDE_BIN): ${err.message}`));
    });
    exited.then(({ code }) => {
      clearTimeout(timer);
      fail(new Error(`bedside exited with ${code} before listening:\n${output}`));
    });
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /bedside listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        done(match[1]);
      }
    });
  });
  return {
    url,
    logs: () => output,
    api: apiClient(url),
    mint,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function apiClient(base) {
  const auth = 'Basic ' + Buffer.from(`${KEY_ID}:${KEY_SECRET}`).toString('base64');
  const call = async (method, path, body) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    createVisit: (body = {}) => call('POST', '/v1/visits', body),
    getVisit: (id) => call('GET', `/v1/visits/${id}`),
    events: async (id) => (await call('GET', `/v1/visits/${id}/events`)).events,
    quality: (id) => call('GET', `/v1/visits/${id}/quality`),
    token: async (visitId, body) => (await call('POST', `/v1/visits/${visitId}/tokens`, body)).token,
    /** `{token, expires_at, join_url}` of a provider token (the dashboard's link). */
    providerToken: (provider, body = {}) => call('POST', `/v1/providers/${encodeURIComponent(provider)}/tokens`, body),
    transfer: (visitId, provider) => call('POST', `/v1/visits/${visitId}/transfer`, { provider }),
    queue: async (provider) => (await call('GET', `/v1/providers/${encodeURIComponent(provider)}/queue`)).entries,
    removeParticipant: (visitId, identity) =>
      call('DELETE', `/v1/visits/${visitId}/participants/${encodeURIComponent(identity)}`),
  };
}

/**
 * A join token signed with the test key, as a clinic holding its secret may mint one itself:
 * for the tokens the API will not issue (already expired, for a visit that does not exist).
 */
function mint({ visit, sub, role, name, iat, nbf, exp }) {
  const now = Math.floor(Date.now() / 1000);
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = part({ alg: 'HS256', typ: 'JWT', kid: KEY_ID });
  const body = part({ iss: KEY_ID, sub, visit, role, name, iat: iat ?? now, nbf: nbf ?? now, exp: exp ?? now + 600, jti: randomUUID() });
  const signature = createHmac('sha256', KEY_SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}
