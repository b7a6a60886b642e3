// Embed mode: a clinic's portal shows the visit page in an <iframe>, and the page reports
// the visit's progress to it with postMessage. Bedside's `embed_origins` setting names the
// portals allowed to frame it (CSP frame-ancestors): any other page cannot show it at all,
// and receives nothing. Chromium only: the test reaches into the frame with Playwright's
// frame locators (the page in the frame is the same one the visit suites run in both browsers).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { eventually, launchBrowser } from './lib/driver.js';
import { startSite } from './lib/site.js';

const TIMEOUT = 60_000;

/** A portal page framing `src`, keeping every message Bedside's origin posts to it. */
function portal(src, bedsideOrigin) {
  return `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Patient portal</title>
<h1>Your appointment</h1>
<iframe src="${src}" allow="camera; microphone" width="800" height="600" title="Video visit"></iframe>
<script>
  window.messages = [];
  addEventListener('message', (e) => { if (e.origin === ${JSON.stringify(bedsideOrigin)}) window.messages.push(e.data); });
</script>
</html>`;
}

describe('embed mode: the visit page in a clinic portal', () => {
  let server;
  let allowed;
  let other;
  let browser;
  const allowedPages = {};
  const otherPages = {};

  before(async () => {
    allowed = await startSite(allowedPages);
    other = await startSite(otherPages);
    server = await startBedside({ env: { BEDSIDE_EMBED_ORIGINS: allowed.origin } });
    browser = await launchBrowser('chromium');
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    await allowed?.close();
    await other?.close();
  });

  it('the allow-list is the CSP frame-ancestors; without it nobody may frame the page', { timeout: TIMEOUT }, async () => {
    const headers = (await fetch(server.url)).headers;
    assert.match(headers.get('content-security-policy'), new RegExp(`frame-ancestors ${allowed.origin};`));
    assert.equal(headers.get('x-frame-options'), null, 'X-Frame-Options cannot name an allow-list');

    const plain = await startBedside();
    try {
      const headers = (await fetch(plain.url)).headers;
      assert.match(headers.get('content-security-policy'), /frame-ancestors 'none';/);
      assert.equal(headers.get('x-frame-options'), 'DENY');
    } finally {
      await plain.stop();
    }
  });

  it('reports joined, waiting, admitted and ended to the portal, and nothing personal', { timeout: TIMEOUT * 2 }, async (t) => {
    const visitId = (await server.api.createVisit({ external_ref: 'embed' })).id;
    const doctorToken = await server.api.token(visitId, { role: 'doctor', identity: 'dr-embed', name: 'Dr Embed' });
    const patientToken = await server.api.token(visitId, { role: 'patient', identity: 'patient-embed', name: 'Pia Portal' });
    allowedPages['/visit'] = portal(`${server.url}/#token=${patientToken}`, server.url);
    const doctor = await browser.person();
    const patient = await browser.person();
    t.after(() => Promise.all([doctor.close(), patient.close()]));

    await doctor.page.goto(`${server.url}/#token=${doctorToken}`);
    await doctor.page.getByRole('button', { name: 'Start the visit' }).click();

    await patient.page.goto(`${allowed.origin}/visit`);
    const frame = patient.page.frameLocator('iframe');
    await frame.getByRole('button', { name: 'Join the visit' }).click();
    await frame.getByRole('heading', { name: 'Your doctor will let you in shortly' }).waitFor();
    const messages = () => patient.page.evaluate(() => window.messages);
    await eventually('joined and waiting posted', async () => (await messages()).map((m) => m.type).join() === 'joined,waiting');
    const [joined] = await messages();
    assert.equal(joined.source, 'bedside');
    assert.equal(joined.visit_id, visitId);
    assert.equal(joined.role, 'patient');
    assert.match(joined.participant_id, /^p_[0-9a-f]{16}$/);
    await patient.screenshot('embed-portal-waiting');

    await doctor.page.getByRole('button', { name: 'Admit Pia Portal' }).click();
    await frame.locator('#screen-call').waitFor();
    await eventually('admitted posted', async () => (await messages()).some((m) => m.type === 'admitted'));
    await frame.locator('#tiles li[data-participant]', { hasText: 'Dr Embed' }).waitFor();
    await patient.screenshot('embed-portal-in-call');

    await doctor.page.getByRole('button', { name: 'End visit', exact: true }).click();
    await doctor.page.getByRole('button', { name: 'End visit for everyone' }).click();
    await frame.getByRole('heading', { name: 'The visit has ended' }).waitFor();
    await eventually('ended posted', async () => (await messages()).some((m) => m.type === 'ended'));
    const all = await messages();
    assert.deepEqual(all.map((m) => m.type), ['joined', 'waiting', 'admitted', 'ended']);
    assert.deepEqual(all.at(-1), { source: 'bedside', type: 'ended', outcome: 'ended', reason: 'ended_by_doctor' });
    const text = JSON.stringify(all);
    for (const secret of ['Pia Portal', 'Dr Embed', 'patient-embed', patientToken]) assert.ok(!text.includes(secret), `no ${secret} in the messages`);
  });

  it('a page not on the list cannot frame the visit page and hears nothing', { timeout: TIMEOUT }, async (t) => {
    const visitId = (await server.api.createVisit({ external_ref: 'embed-other' })).id;
    const token = await server.api.token(visitId, { role: 'patient', identity: 'patient-other', name: 'Otto Other' });
    otherPages['/visit'] = portal(`${server.url}/#token=${token}`, server.url);
    const p = await browser.person();
    t.after(() => p.close());
    await p.page.goto(`${other.origin}/visit`);
    await eventually('the browser refusing the frame (CSP frame-ancestors)', () => p.problems.csp.some((m) => m.includes('frame-ancestors')));
    const frame = p.page.frames().find((f) => f !== p.page.mainFrame());
    assert.ok(!(await frame.content()).includes('Join the visit'), 'the visit page is not shown');
    assert.deepEqual(await p.page.evaluate(() => window.messages), []);
    await p.screenshot('embed-other-portal-refused');
  });
});
