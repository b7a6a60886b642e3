// The client SDK as an integrator uses it: the custom visit page of docs/sdk.md, served from
// a clinic's own origin with the SDK files copied next to it, driven in Chromium and Firefox
// against the real binary. A doctor in Bedside's own web client admits the patient, and
// the two talk: video both ways, chat, mute, leave.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { DESKTOP, ENGINES, PHONE, eventually, launchBrowser } from './lib/driver.js';
import { NetworkPath } from './lib/network.js';
import { startSite } from './lib/site.js';

const TIMEOUT = 60_000;
const DOCS = new URL('../../docs/sdk.md', import.meta.url);

/** The page docs/sdk.md shows: the html block after the marker comment that names this test. */
export async function examplePage() {
  const doc = await readFile(DOCS, 'utf8');
  const match = /<!-- tests\/browser\/sdk\.test\.mjs[^>]*-->\n```html\n([\s\S]*?)```/.exec(doc);
  assert.ok(match, 'docs/sdk.md has the example page');
  return match[1];
}

for (const engine of ENGINES) {
  describe(`a custom visit page built on the SDK, in ${engine}`, () => {
    let server;
    let site;
    let browser;
    let doctor;
    let patient;
    let visitId;
    const doctorPath = new NetworkPath();

    before(async () => {
      const page = await examplePage();
      const url = /url: '([^']+)'/.exec(page)?.[1];
      assert.ok(url, 'the example names the /ws URL');
      // The clinic's site needs its page to reach Bedside: only the address changes.
      const pages = { '/visit.html': null };
      site = await startSite(pages);
      await doctorPath.listen();
      server = await startBedside({ env: { BEDSIDE_ALLOWED_ORIGINS: `${doctorPath.origin},${site.origin}` } });
      doctorPath.target(server.url);
      pages['/visit.html'] = page.replace(url, `${server.url.replace('http:', 'ws:')}/ws`);
      browser = await launchBrowser(engine);
      visitId = (await server.api.createVisit({ external_ref: 'sdk-example' })).id;
      doctor = await browser.person({ viewport: DESKTOP });
      patient = await browser.person({ viewport: PHONE });
    });

    after(async () => {
      for (const [who, p] of [['doctor', doctor], ['patient', patient]]) if (p) await p.screenshot(`sdk-example-${engine}-end-${who}`).catch(() => {});
      await browser?.close();
      await server?.stop();
      await site?.close();
      await doctorPath.close();
    });

    it('is at most 40 lines', async () => {
      const lines = (await examplePage()).trimEnd().split('\n').length;
      assert.ok(lines <= 40, `${lines} lines`);
    });

    it('waits, is admitted, sees the doctor, chats, mutes and leaves', { timeout: TIMEOUT * 2 }, async () => {
      const doctorToken = await server.api.token(visitId, { role: 'doctor', identity: 'dr-sdk', name: 'Dr Okafor' });
      const patientToken = await server.api.token(visitId, { role: 'patient', identity: 'patient-sdk', name: 'Ada Example' });
      await doctor.goto(`${doctorPath.origin}/#token=${doctorToken}`);
      await doctor.click({ role: 'button', name: 'Start the visit' });

      await patient.goto(`${site.origin}/visit.html#token=${patientToken}`);
      await patient.waitFor({ role: 'heading', name: 'The doctor will let you in shortly' });
      assert.ok(!patient.url().includes('token='), 'the token is removed from the address bar');
      await patient.screenshot(`sdk-example-${engine}-waiting`);

      await doctor.click({ role: 'button', name: 'Admit Ada Example' });
      await patient.waitFor({ role: 'heading', name: 'You are in the visit' });
      await eventually('the doctor on the patient page', () => patient.evaluate(() => document.getElementById('doctor').videoWidth > 0), { timeout: 30_000 });
      const start = await patient.framesDecoded();
      await eventually('video frames from the doctor', async () => (await patient.framesDecoded()) >= start + 15);
      const doctorStart = await doctor.framesDecoded();
      await eventually('video frames from the patient', async () => (await doctor.framesDecoded()) >= doctorStart + 15);
      await patient.screenshot(`sdk-example-${engine}-in-call`);

      await patient.fill({ role: 'textbox', name: 'Message' }, 'Hello from my clinic page');
      await patient.click({ role: 'button', name: 'Send' });
      await doctor.waitFor({ css: '#chat-list li', text: 'Ada Example: Hello from my clinic page' });
      await patient.waitFor({ css: '#log li', text: 'Ada Example: Hello from my clinic page' });
      await doctor.fill({ role: 'textbox', name: 'Message' }, 'Welcome, Ada.');
      await doctor.click({ role: 'button', name: 'Send' });
      await patient.waitFor({ css: '#log li', text: 'Dr Okafor: Welcome, Ada.' });

      const badges = '#tiles li[data-participant] .badges';
      await patient.click({ role: 'button', name: 'Mute', exact: true });
      await patient.waitFor({ role: 'button', name: 'Unmute' });
      await eventually('the doctor to see the patient muted', async () => (await doctor.text(badges)).includes('Muted'));

      await patient.click({ role: 'button', name: 'Leave' });
      await patient.waitFor({ role: 'heading', name: 'Visit over (left)' });
      await eventually('the patient gone from the doctor page', async () => (await doctor.count('#tiles li[data-participant]')) === 0);
      assert.deepEqual(patient.problems.pageErrors, [], 'no uncaught error on the example page');
      // Firefox lists the WebSocket's handshake as a request; Chromium does not. The SDK
      // names the visit in it (a placement hint, docs/protocol.md).
      const ws = `${server.url}/ws?visit=${visitId}`;
      assert.deepEqual(patient.problems.offOrigin.filter((u) => u !== ws), [], 'nothing but the site and Bedside\'s /ws');
    });
  });
}
