// The paths around the main visit, in headless Chromium against the real binary: no link,
// broken links, each pre-call failure, a denied patient, a three-person mesh with a
// removal, and a page reload in the middle of a call.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { eventually, fitsWidth, launchBrowser, openPerson, pcStates, screenshot } from './lib/browser.js';

const TIMEOUT = 60_000;

describe('around the visit', () => {
  let server;
  let browser;
  const people = [];

  before(async () => {
    server = await startBedside();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop();
  });

  /** A new person (own browser context), closed after the test. */
  async function person(t, options) {
    const p = await openPerson(browser, options);
    people.push(p);
    t.after(() => p.context.close().catch(() => {}));
    return p;
  }

  async function newVisit(max = 2) {
    return (await server.api.createVisit({ external_ref: 'browser-edges', max_participants: max })).id;
  }

  /** Opens a join link and goes through the pre-call check. */
  async function join(p, visitId, { role, identity, name }) {
    const token = await server.api.token(visitId, { role, identity, name });
    await p.page.goto(`${server.url}/#token=${token}`);
    await p.page.getByRole('button', { name: role === 'doctor' ? 'Start the visit' : 'Join the visit' }).click();
    return p;
  }

  /** Video frames decoded per live peer connection. */
  const framesPerPeer = (page) =>
    page.evaluate(() =>
      Promise.all(
        window.__test.pcs
          .filter((pc) => pc.connectionState !== 'closed')
          .map(async (pc) => {
            let frames = 0;
            (await pc.getStats()).forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
            });
            return frames;
          }),
      ),
    );

  async function expectConnectedTo(p, peers) {
    await eventually(`${peers} connected peer connection(s)`, async () => {
      const states = await pcStates(p.page);
      return states.length === peers && states.every((s) => s === 'connected');
    }, { timeout: 30_000 });
    const start = await framesPerPeer(p.page);
    await eventually('video frames rising from every peer', async () => {
      const now = await framesPerPeer(p.page);
      return now.length === peers && now.every((f, i) => f >= (start[i] ?? 0) + 10);
    }, { timeout: 20_000 });
  }

  it('without a link, the page says to open the link from the clinic', { timeout: TIMEOUT }, async (t) => {
    const { page } = await person(t, { viewport: { width: 360, height: 640 } });
    await page.goto(server.url);
    await page.getByRole('heading', { name: 'Bedside video visits' }).waitFor();
    await page.getByText('open the link your clinic sent you').waitFor();
    assert.ok(await fitsWidth(page));
    await screenshot(page, 'edges-landing');
  });

  it('a malformed link and a forged token both say the link does not work', { timeout: TIMEOUT }, async (t) => {
    const { page } = await person(t);
    await page.goto(`${server.url}/#token=not-a-token`);
    await page.getByRole('heading', { name: 'This link does not work' }).waitFor();

    // Shaped like a join token, but not signed with the clinic's key: Bedside refuses it
    // (close 4001) after the pre-call check.
    const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const visit = await newVisit();
    const now = Math.floor(Date.now() / 1000);
    const forged = `${part({ alg: 'HS256', typ: 'JWT', kid: 'browser-test' })}.${part({
      iss: 'browser-test', sub: 'mallory', visit, role: 'patient', name: 'Mallory', iat: now, nbf: now, exp: now + 600, jti: 'forged-1',
    })}.${Buffer.from('not the signature').toString('base64url')}`;
    const second = await person(t);
    await second.page.goto(`${server.url}/#token=${forged}`);
    await second.page.getByRole('button', { name: 'Join the visit' }).click();
    await second.page.getByRole('heading', { name: 'This link does not work' }).waitFor();
    await screenshot(second.page, 'edges-forged-link');
  });

  for (const [error, message] of [
    ['NotAllowedError', 'Access was blocked'],
    ['NotFoundError', 'No device was found'],
    ['NotReadableError', 'in use by another app'],
  ]) {
    it(`the pre-call check explains ${error} and still lets the patient join`, { timeout: TIMEOUT }, async (t) => {
      const p = await person(t, {
        viewport: { width: 360, height: 740 },
        // The browser refusing the devices, as it does for a denied prompt, no hardware or
        // a camera held by another app.
        init: `navigator.mediaDevices.getUserMedia = async () => { throw new DOMException('refused', ${JSON.stringify(error)}); };`,
      });
      const visit = await newVisit();
      const token = await server.api.token(visit, { role: 'patient', identity: `patient-${error}`, name: 'Pat' });
      await p.page.goto(`${server.url}/#token=${token}`);
      const problems = p.page.locator('#precall-problems');
      await eventually('the problem message', async () => (await problems.innerText()).includes(message));
      assert.match(await problems.innerText(), /You can still join, but the others will not see or hear you/);
      assert.ok(await p.page.getByRole('button', { name: 'Try again' }).isVisible());
      assert.ok(await fitsWidth(p.page));
      await screenshot(p.page, `edges-precall-${error}`);
      await p.page.getByRole('button', { name: 'Join the visit' }).click();
      await p.page.getByRole('heading', { name: 'Your doctor will let you in shortly' }).waitFor();
    });
  }

  it('a denied patient is told they were not let in', { timeout: TIMEOUT }, async (t) => {
    const visit = await newVisit();
    const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-deny', name: 'Dr Deny' });
    const patient = await join(await person(t, { viewport: { width: 360, height: 740 } }), visit, { role: 'patient', identity: 'patient-deny', name: 'Dee Nied' });
    await patient.page.getByRole('heading', { name: 'Your doctor will let you in shortly' }).waitFor();
    await doctor.page.getByRole('button', { name: 'Deny Dee Nied' }).click();
    await patient.page.getByRole('heading', { name: 'You were not let in' }).waitFor();
    await doctor.page.locator('#lobby').getByText('No one is waiting.').waitFor();
    await screenshot(patient.page, 'edges-denied');
  });

  it('three people form a mesh, and the doctor can remove one', { timeout: 90_000 }, async (t) => {
    const visit = await newVisit(3);
    const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-mesh', name: 'Dr Mesh' });
    const patient = await join(await person(t), visit, { role: 'patient', identity: 'patient-mesh', name: 'Pat Mesh' });
    const guest = await join(await person(t), visit, { role: 'guest', identity: 'guest-mesh', name: 'Gus Guest' });
    await doctor.page.getByRole('button', { name: 'Admit Pat Mesh' }).click();
    await doctor.page.getByRole('button', { name: 'Admit Gus Guest' }).click();
    await Promise.all([doctor, patient, guest].map((p) => expectConnectedTo(p, 2)));
    await screenshot(doctor.page, 'edges-mesh-doctor');

    await doctor.page.getByRole('button', { name: 'Remove Gus Guest from the visit' }).click();
    await guest.page.getByRole('heading', { name: 'You were removed from the visit' }).waitFor();
    for (const p of [doctor, patient]) {
      await eventually('the guest gone from the tiles', async () => (await p.page.locator('#tiles li[data-participant]').count()) === 1);
      await eventually('one peer connection left', async () => (await pcStates(p.page)).length === 1);
    }
    await screenshot(guest.page, 'edges-removed');
  });

  it('a reload in the middle of a call comes back without a new admission', { timeout: 90_000 }, async (t) => {
    const visit = await newVisit();
    const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-reload', name: 'Dr Reload' });
    const patient = await join(await person(t, { viewport: { width: 360, height: 740 } }), visit, { role: 'patient', identity: 'patient-reload', name: 'Ray Load' });
    await doctor.page.getByRole('button', { name: 'Admit Ray Load' }).click();
    await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);

    // The page starts over: new socket, new RTCPeerConnection. The token is kept for the
    // tab, the pre-call check is not repeated, and the doctor's side replaces its
    // connection to the patient's old one.
    await patient.page.reload();
    await patient.page.locator('#screen-call').waitFor();
    await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);
    assert.equal(await doctor.page.locator('#lobby-list li').count(), 0, 'nobody waits for admission');
    const kinds = (await server.api.events(visit)).filter((e) => e.identity === 'patient-reload').map((e) => e.kind);
    assert.equal(kinds.filter((k) => k === 'admitted').length, 1, `one admission only: ${kinds}`);
    await screenshot(patient.page, 'edges-after-reload');
  });

  it('offers that cross (both sides restart ICE at once) settle without deadlock', { timeout: 90_000 }, async (t) => {
    const visit = await newVisit();
    const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-glare', name: 'Dr Glare' });
    const patient = await join(await person(t), visit, { role: 'patient', identity: 'patient-glare', name: 'Gail Glare' });
    await doctor.page.getByRole('button', { name: 'Admit Gail Glare' }).click();
    await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);

    const ufrags = (page) =>
      page.evaluate(() => {
        const pc = window.__test.pcs.find((c) => c.connectionState !== 'closed');
        const ufrag = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp ?? '')?.[1];
        return { local: ufrag(pc.localDescription), remote: ufrag(pc.remoteDescription), state: pc.signalingState };
      });
    const before = await Promise.all([ufrags(doctor.page), ufrags(patient.page)]);
    // Both at once: each side's restart offer is in flight when the other's arrives.
    await Promise.all(
      [doctor, patient].map((p) => p.page.evaluate(() => window.__test.pcs.find((c) => c.connectionState !== 'closed').restartIce())),
    );
    await eventually('new ICE credentials on both sides, negotiation finished', async () => {
      const now = await Promise.all([ufrags(doctor.page), ufrags(patient.page)]);
      return now.every((n, i) => n.state === 'stable' && n.local !== before[i].local && n.remote !== before[i].remote);
    }, { timeout: 20_000 });
    await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);
  });

  it('no page broke the Content-Security-Policy or left its origin', () => {
    for (const p of people) {
      assert.deepEqual(p.problems.csp, []);
      assert.deepEqual(p.problems.offOrigin, []);
      assert.deepEqual(p.problems.pageErrors, []);
    }
  });
});
