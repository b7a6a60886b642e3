// The client SDK as an integrator uses it: the custom visit page of docs/sdk.md, served from
// a clinic's own origin with the SDK files copied next to it, driven in headless Chromium
// against the real binary. A doctor in Bedside's own web client admits the patient, and
// the two talk: video both ways, chat, mute, leave.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { eventually, framesDecoded, launchBrowser, openPerson, screenshot } from './lib/browser.js';
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

describe('a custom visit page built on the SDK', () => {
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
    browser = await launchBrowser();
    visitId = (await server.api.createVisit({ external_ref: 'sdk-example' })).id;
    doctor = await openPerson(browser);
    patient = await openPerson(browser, { viewport: { width: 360, height: 740 } });
  });

  after(async () => {
    for (const [who, p] of [['doctor', doctor], ['patient', patient]]) if (p) await screenshot(p.page, `sdk-example-end-${who}`).catch(() => {});
    await browser?.close().catch(() => {});
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
    await doctor.page.goto(`${doctorPath.origin}/#token=${doctorToken}`);
    await doctor.page.getByRole('button', { name: 'Start the visit' }).click();

    const { page } = patient;
    await page.goto(`${site.origin}/visit.html#token=${patientToken}`);
    await page.getByRole('heading', { name: 'The doctor will let you in shortly' }).waitFor();
    assert.ok(!page.url().includes('token='), 'the token is removed from the address bar');
    await screenshot(page, 'sdk-example-waiting');

    await doctor.page.getByRole('button', { name: 'Admit Ada Example' }).click();
    await page.getByRole('heading', { name: 'You are in the visit' }).waitFor();
    await eventually('the doctor on the patient page', () => page.evaluate(() => document.getElementById('doctor').videoWidth > 0), { timeout: 30_000 });
    const start = await framesDecoded(page);
    await eventually('video frames from the doctor', async () => (await framesDecoded(page)) >= start + 15);
    const doctorStart = await framesDecoded(doctor.page);
    await eventually('video frames from the patient', async () => (await framesDecoded(doctor.page)) >= doctorStart + 15);
    await screenshot(page, 'sdk-example-in-call');

    await page.getByRole('textbox', { name: 'Message' }).fill('Hello from my clinic page');
    await page.getByRole('button', { name: 'Send' }).click();
    await doctor.page.locator('#chat-log li', { hasText: 'Ada Example: Hello from my clinic page' }).waitFor();
    await page.locator('#log li', { hasText: 'Ada Example: Hello from my clinic page' }).waitFor();
    await doctor.page.getByRole('textbox', { name: 'Message' }).fill('Welcome, Ada.');
    await doctor.page.getByRole('button', { name: 'Send' }).click();
    await page.locator('#log li', { hasText: 'Dr Okafor: Welcome, Ada.' }).waitFor();

    const tile = doctor.page.locator('#tiles li[data-participant]', { hasText: 'Ada Example' });
    await page.getByRole('button', { name: 'Mute' }).click();
    await page.getByRole('button', { name: 'Unmute' }).waitFor();
    await eventually('the doctor to see the patient muted', async () => (await tile.locator('.badges').innerText()).includes('Muted'));

    await page.getByRole('button', { name: 'Leave' }).click();
    await page.getByRole('heading', { name: 'Visit over (left)' }).waitFor();
    await eventually('the patient gone from the doctor page', async () => (await doctor.page.locator('#tiles li[data-participant]').count()) === 0);
    assert.deepEqual(patient.problems.pageErrors, [], 'no uncaught error on the example page');
    assert.deepEqual(patient.problems.offOrigin.filter((u) => !u.startsWith(server.url.replace('http:', 'ws:'))), [], 'nothing but the site and Bedside');
  });
});
