// The client's pure decisions, tested in Node without a browser: reconnect delays, what a
// close code means for the person, how waiting times and names read, token decoding.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { backoffDelay, finalOutcome, readClaims } from '../../web-client/sdk/index.js';
import { withVisitHint } from '../../web-client/sdk/signaling.js';
import { frameAncestors } from '../../web-client/js/embed.js';
import { browserOf, fixSteps } from '../../web-client/js/help.js';
import { displayName, formatWait } from '../../web-client/js/views/lobby.js';

test('backoff grows exponentially, is capped, and always waits', () => {
  const low = { random: () => 0 };
  const high = { random: () => 1 };
  assert.equal(backoffDelay(0, low), 250);
  assert.equal(backoffDelay(0, high), 500);
  assert.equal(backoffDelay(3, high), 4000);
  assert.equal(backoffDelay(10, high), 10_000);
  assert.equal(backoffDelay(1000, low), 5000);
  for (let attempt = 0; attempt < 20; attempt++) assert.ok(backoffDelay(attempt) > 0);
});

test('close codes: final ones name what happened, the others mean reconnect', () => {
  assert.deepEqual(finalOutcome(1000), { outcome: 'left' });
  assert.deepEqual(finalOutcome(4001, { error: 'invalid_token' }), { outcome: 'link_invalid' });
  assert.deepEqual(finalOutcome(4001, { error: 'token_expired' }), { outcome: 'link_expired' });
  assert.deepEqual(finalOutcome(4003, { denied: 'denied' }), { outcome: 'denied', reason: undefined });
  assert.deepEqual(finalOutcome(4003, { denied: 'Please call the front desk' }), { outcome: 'denied', reason: 'Please call the front desk' });
  assert.deepEqual(finalOutcome(4003, { denied: 'removed' }), { outcome: 'removed' });
  assert.deepEqual(finalOutcome(4003, { error: 'visit_full' }), { outcome: 'visit_full' });
  assert.deepEqual(finalOutcome(4003, { error: 'visit_not_started' }), { outcome: 'not_started' });
  assert.deepEqual(finalOutcome(4004, { ended: 'ended_by_doctor' }), { outcome: 'ended', reason: 'ended_by_doctor' });
  assert.deepEqual(finalOutcome(4004, { error: 'visit_not_found' }), { outcome: 'not_found' });
  assert.deepEqual(finalOutcome(4009), { outcome: 'replaced' });
  // A removal or denial blocks the identity: its old links are refused for good.
  assert.deepEqual(finalOutcome(4003, { error: 'access_revoked' }), { outcome: 'revoked' });
  assert.deepEqual(finalOutcome(4001, { error: 'access_revoked' }), { outcome: 'revoked' });
  // A single-use link already used by someone else.
  assert.deepEqual(finalOutcome(4001, { error: 'token_used' }), { outcome: 'link_used' });
  for (const code of [1001, 1006, 1011, 1013, 4008]) assert.equal(finalOutcome(code), null, `${code} reconnects`);
});

test('waiting times and names read well', () => {
  assert.equal(formatWait(0), '0 s');
  assert.equal(formatWait(59), '59 s');
  assert.equal(formatWait(61), '1 min 1 s');
  assert.equal(formatWait(3720), '1 h 2 min');
  assert.equal(displayName({ name: '  Sam  ', role: 'patient' }), 'Sam');
  assert.equal(displayName({ name: '', role: 'patient' }), 'Patient');
  assert.equal(displayName({ role: 'doctor' }), 'Doctor');
});

test('token claims are read for display, and junk is refused', () => {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const jwt = `${part({ alg: 'HS256' })}.${part({ role: 'patient', name: 'Zoë Ñúñez' })}.sig`;
  assert.deepEqual(readClaims(jwt), { role: 'patient', name: 'Zoë Ñúñez' });
  assert.equal(readClaims('not-a-token'), null);
  assert.equal(readClaims(`${part({})}.${part({ role: 'admin' })}.sig`), null);
  assert.equal(readClaims('a.!!!.c'), null);
});

test('the /ws URL names the visit a join token is for, and nothing else', () => {
  const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;
  const doctor = jwt({ role: 'doctor', visit: 'c5a07f13-e742-4d4f-b0a4-0d197b30dcd6', sub: 'dr-1' });
  assert.equal(withVisitHint('wss://clinic.example/ws', doctor), 'wss://clinic.example/ws?visit=c5a07f13-e742-4d4f-b0a4-0d197b30dcd6');
  assert.equal(withVisitHint('ws://127.0.0.1:8080/ws?x=1', doctor), 'ws://127.0.0.1:8080/ws?x=1&visit=c5a07f13-e742-4d4f-b0a4-0d197b30dcd6');
  // A provider's token names no visit; junk and odd ids leave the URL alone.
  assert.equal(withVisitHint('wss://clinic.example/ws', jwt({ role: 'provider', provider: 'dr-1' })), 'wss://clinic.example/ws');
  assert.equal(withVisitHint('wss://clinic.example/ws', 'not-a-token'), 'wss://clinic.example/ws');
  assert.equal(withVisitHint('wss://clinic.example/ws', jwt({ role: 'patient', visit: 'a/../b' })), 'wss://clinic.example/ws');
  assert.equal(withVisitHint('/ws', doctor), '/ws');
});

test('the SDK declarations (index.d.ts) name exactly what the module exports', async () => {
  const sdk = await import('../../web-client/sdk/index.js');
  const dts = await readFile(new URL('../../web-client/sdk/index.d.ts', import.meta.url), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:class|function) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(sdk).sort());

  // Each class's members, both ways: nothing declared that is missing, nothing public undeclared.
  for (const name of ['Visit', 'Signaling', 'Emitter', 'Dashboard']) {
    const body = new RegExp(`^export declare class ${name}\\b[^{]*\\{([\\s\\S]*?)^\\}`, 'm').exec(dts)[1];
    const members = new Set([...body.matchAll(/^ {2}(?:readonly )?(\w+)[(<:?]/gm)].map((m) => m[1]).filter((m) => m !== 'constructor'));
    const proto = sdk[name].prototype;
    const own = Object.getOwnPropertyNames(proto).filter((m) => m !== 'constructor' && m !== 'emit');
    for (const member of members) {
      const instanceField = name === 'Signaling' && member === 'participantId';
      assert.ok(instanceField || member in proto, `${name}.${member} is declared but not implemented`);
    }
    for (const member of own) assert.ok(members.has(member), `${name}.${member} is public but not declared`);
  }
});

test('embed mode posts only to the exact origins of frame-ancestors', () => {
  const csp = "default-src 'self'; frame-ancestors https://portal.example.org http://127.0.0.1:8081; base-uri 'none'";
  assert.deepEqual(frameAncestors(csp), ['https://portal.example.org', 'http://127.0.0.1:8081']);
  assert.deepEqual(frameAncestors("default-src 'self'; frame-ancestors 'none'"), []);
  assert.deepEqual(frameAncestors("frame-ancestors 'self' https://*.example.org *"), []);
  assert.deepEqual(frameAncestors(null), []);
});

test('the camera help is worded for the browser in use', () => {
  const ua = {
    ios: 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1',
    'chrome-android': 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Mobile Safari/537.36',
    samsung: 'Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36',
    'firefox-android': 'Mozilla/5.0 (Android 14; Mobile; rv:130.0) Gecko/130.0 Firefox/130.0',
    firefox: 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
    edge: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0',
    chrome: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36',
    safari: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15',
  };
  for (const [browser, agent] of Object.entries(ua)) assert.equal(browserOf(agent), browser, agent);
  assert.equal(browserOf('curl/8'), 'other');
  assert.match(fixSteps('denied', 'ios').join(' '), /aA.*Website Settings/);
  assert.match(fixSteps('denied', 'chrome-android').join(' '), /Permissions/);
  assert.match(fixSteps('busy', 'chrome-android').join(' '), /^Close other apps.*Tap Try again\.$/);
  assert.match(fixSteps('busy', 'chrome').join(' '), /Press Try again\.$/);
  for (const problem of ['denied', 'missing', 'busy', 'insecure', 'unknown']) {
    for (const browser of [...Object.keys(ua), 'other']) assert.ok(fixSteps(problem, browser).length >= 1, `${problem} in ${browser}`);
  }
});
