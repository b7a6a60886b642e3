// The paths around the main visit, in Chromium and Firefox against the real binary: no link,
// broken links, each pre-call failure on a phone, a denied patient, a three-person mesh with a
// removal, a page reload in the middle of a call, and offers that cross.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { ENGINES, PHONE, eventually, launchBrowser } from './lib/driver.js';

const TIMEOUT = 60_000;

for (const engine of ENGINES) {
  describe(`around the visit, in ${engine}`, () => {
    let server;
    let browser;
    const people = [];

    before(async () => {
      server = await startBedside();
      browser = await launchBrowser(engine);
    });

    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    /** A new person (own browser context), closed after the test. */
    async function person(t, options) {
      const p = await browser.person(options);
      people.push(p);
      t.after(() => p.close());
      return p;
    }

    async function newVisit(max = 2) {
      return (await server.api.createVisit({ external_ref: 'browser-edges', max_participants: max })).id;
    }

    /** Opens a join link and goes through the pre-call check. */
    async function join(p, visitId, { role, identity, name }) {
      const token = await server.api.token(visitId, { role, identity, name });
      await p.goto(`${server.url}/#token=${token}`);
      await p.click({ role: 'button', name: role === 'doctor' ? 'Start the visit' : 'Join the visit' });
      return p;
    }

    async function expectConnectedTo(p, peers) {
      await eventually(`${peers} connected peer connection(s)`, async () => {
        const states = await p.pcStates();
        return states.length === peers && states.every((s) => s === 'connected');
      }, { timeout: 30_000 });
      const start = await p.framesPerPeer();
      await eventually('video frames rising from every peer', async () => {
        const now = await p.framesPerPeer();
        return now.length === peers && now.every((f, i) => f >= (start[i] ?? 0) + 10);
      }, { timeout: 20_000 });
    }

    it('without a link, the page says to open the link from the clinic', { timeout: TIMEOUT }, async (t) => {
      const p = await person(t, { viewport: PHONE });
      await p.goto(server.url);
      await p.waitFor({ role: 'heading', name: 'Bedside video visits' });
      await p.waitFor({ css: 'p', text: 'open the link your clinic sent you' });
      assert.ok(await p.fitsWidth());
      await p.screenshot(`edges-${engine}-landing`);
    });

    it('a malformed link and a forged token both say the link does not work', { timeout: TIMEOUT }, async (t) => {
      const p = await person(t);
      await p.goto(`${server.url}/#token=not-a-token`);
      await p.waitFor({ role: 'heading', name: 'This link does not work' });

      // Shaped like a join token, but not signed with the clinic's key: Bedside refuses it
      // (close 4001) after the pre-call check.
      const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const visit = await newVisit();
      const now = Math.floor(Date.now() / 1000);
      const forged = `${part({ alg: 'HS256', typ: 'JWT', kid: 'browser-test' })}.${part({
        iss: 'browser-test', sub: 'mallory', visit, role: 'patient', name: 'Mallory', iat: now, nbf: now, exp: now + 600, jti: 'forged-1',
      })}.${Buffer.from('not the signature').toString('base64url')}`;
      const second = await person(t);
      await second.goto(`${server.url}/#token=${forged}`);
      await second.click({ role: 'button', name: 'Join the visit' });
      await second.waitFor({ role: 'heading', name: 'This link does not work' });
      await second.screenshot(`edges-${engine}-forged-link`);
    });

    for (const [error, message, join] of [
      ['NotAllowedError', 'access was blocked', 'Join without camera and microphone'],
      ['NotFoundError', 'none was found', 'Join without camera and microphone'],
      ['NotReadableError', 'it is in use by another app', 'Join without camera and microphone'],
    ]) {
      it(`the pre-call check on a phone explains ${error} above the fold and still lets the patient join`, { timeout: TIMEOUT }, async (t) => {
        const p = await person(t, {
          viewport: PHONE,
          // The browser refusing the devices, as it does for a denied prompt, no hardware or
          // a camera held by another app.
          init: `navigator.mediaDevices.getUserMedia = async () => { throw new DOMException('refused', ${JSON.stringify(error)}); };`,
        });
        const visit = await newVisit();
        const token = await server.api.token(visit, { role: 'patient', identity: `patient-${error}`, name: 'Pat' });
        await p.goto(`${server.url}/#token=${token}`);
        await p.waitFor({ css: '#precall-problems', text: message });
        assert.match(await p.text('#precall-problems'), /You can still join, but the others will not see or hear you/);
        assert.ok((await p.count('#precall-steps li')) >= 1, 'the steps to fix it');
        // All of it on the phone's first screen: the explanation, the fix and both ways on.
        for (const css of ['#precall-problems', '#precall-retry', '#precall-join']) {
          assert.ok((await p.box(css)).inside, `${css} is on the first screen: ${JSON.stringify(await p.box(css))}`);
        }
        assert.ok(await p.fitsWidth());
        const said = (await p.spoken()).filter((s) => s.live === 'assertive').map((s) => s.text);
        assert.equal(said.length, 1, `the problem is said once, assertively: ${JSON.stringify(said)}`);
        await p.screenshot(`edges-${engine}-precall-${error}`);
        await p.click({ role: 'button', name: join });
        await p.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      });
    }

    it('a denied patient is told they were not let in', { timeout: TIMEOUT }, async (t) => {
      const visit = await newVisit();
      const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-deny', name: 'Dr Deny' });
      const patient = await join(await person(t, { viewport: PHONE }), visit, { role: 'patient', identity: 'patient-deny', name: 'Dee Nied' });
      await patient.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      await doctor.click({ role: 'button', name: 'Deny Dee Nied' });
      await patient.waitFor({ role: 'heading', name: 'You were not let in' });
      await doctor.waitFor({ css: '#lobby', text: 'No one is waiting.' });
      await patient.screenshot(`edges-${engine}-denied`);
    });

    it('three people form a mesh, and the doctor can remove one', { timeout: 90_000 }, async (t) => {
      const visit = await newVisit(3);
      const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-mesh', name: 'Dr Mesh' });
      const patient = await join(await person(t, { viewport: PHONE }), visit, { role: 'patient', identity: 'patient-mesh', name: 'Pat Mesh' });
      const guest = await join(await person(t), visit, { role: 'guest', identity: 'guest-mesh', name: 'Gus Guest' });
      await doctor.click({ role: 'button', name: 'Admit Pat Mesh' });
      await doctor.click({ role: 'button', name: 'Admit Gus Guest' });
      await Promise.all([doctor, patient, guest].map((p) => expectConnectedTo(p, 2)));
      await doctor.screenshot(`edges-${engine}-mesh-doctor`);
      await patient.screenshot(`edges-${engine}-mesh-patient-phone`);

      await doctor.click({ role: 'button', name: 'Remove Gus Guest from the visit' });
      await guest.waitFor({ role: 'heading', name: 'You were removed from the visit' });
      for (const p of [doctor, patient]) {
        await eventually('the guest gone from the tiles', async () => (await p.count('#tiles li[data-participant]')) === 1);
        await eventually('one peer connection left', async () => (await p.pcStates()).length === 1);
      }
      // The doctor's Remove button went with the tile: focus is on the title, not lost.
      assert.equal((await doctor.focused()).id, 'call-title');
      await guest.screenshot(`edges-${engine}-removed`);
    });

    it('a reload in the middle of a call comes back without a new admission', { timeout: 90_000 }, async (t) => {
      const visit = await newVisit();
      const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-reload', name: 'Dr Reload' });
      const patient = await join(await person(t, { viewport: PHONE }), visit, { role: 'patient', identity: 'patient-reload', name: 'Ray Load' });
      await doctor.click({ role: 'button', name: 'Admit Ray Load' });
      await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);

      // The page starts over: new socket, new RTCPeerConnection. The token is kept for the
      // tab, the pre-call check is not repeated, and the doctor's side replaces its
      // connection to the patient's old one.
      await patient.page.reload();
      await patient.waitFor('#screen-call');
      await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);
      assert.equal(await doctor.count('#lobby-list li'), 0, 'nobody waits for admission');
      const kinds = (await server.api.events(visit)).filter((e) => e.identity === 'patient-reload').map((e) => e.kind);
      assert.equal(kinds.filter((k) => k === 'admitted').length, 1, `one admission only: ${kinds}`);
      await patient.screenshot(`edges-${engine}-after-reload`);
    });

    it('offers that cross (both sides restart ICE at once) settle without deadlock', { timeout: 90_000 }, async (t) => {
      const visit = await newVisit();
      const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-glare', name: 'Dr Glare' });
      const patient = await join(await person(t), visit, { role: 'patient', identity: 'patient-glare', name: 'Gail Glare' });
      await doctor.click({ role: 'button', name: 'Admit Gail Glare' });
      await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);

      const ufrags = (p) =>
        p.evaluate(() => {
          const pc = window.__test.pcs.find((c) => c.connectionState !== 'closed');
          const ufrag = (d) => /a=ice-ufrag:(\S+)/.exec(d?.sdp ?? '')?.[1];
          return { local: ufrag(pc.localDescription), remote: ufrag(pc.remoteDescription), state: pc.signalingState };
        });
      const before = await Promise.all([ufrags(doctor), ufrags(patient)]);
      // Both at once: each side's restart offer is in flight when the other's arrives.
      await Promise.all([doctor, patient].map((p) => p.evaluate(() => window.__test.pcs.find((c) => c.connectionState !== 'closed').restartIce())));
      await eventually('new ICE credentials on both sides, negotiation finished', async () => {
        const now = await Promise.all([ufrags(doctor), ufrags(patient)]);
        return now.every((n, i) => n.state === 'stable' && n.local !== before[i].local && n.remote !== before[i].remote);
      }, { timeout: 20_000 });
      await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(patient, 1)]);
    });

    it('a phone with several cameras can flip between them during the call', { timeout: 90_000, skip: engine !== 'chromium' && 'Firefox offers one fake camera' }, async (t) => {
      // Chromium's fake cameras: fake_device_0 (a normal picture), fake_device_1 (a depth
      // camera, whose frames no video encoder takes) and fake_device_2. The patient picks the
      // third in the pre-call check, and Flip goes on to the first.
      const cameras = await launchBrowser(engine, { cameras: 3 });
      t.after(() => cameras.close());
      const visit = await newVisit();
      const doctor = await join(await person(t), visit, { role: 'doctor', identity: 'dr-flip', name: 'Dr Flip' });
      const phone = await cameras.person({ viewport: PHONE });
      people.push(phone);
      await phone.goto(`${server.url}/#token=${await server.api.token(visit, { role: 'patient', identity: 'patient-flip', name: 'Fay Flip' })}`);
      await phone.waitFor({ role: 'button', name: 'Join the visit', enabled: true });
      await phone.page.selectOption('#camera-select', { label: 'fake_device_2' });
      await eventually('the third camera in the preview', () => phone.evaluate(() => document.querySelector('#precall-video').srcObject?.getVideoTracks()[0]?.label === 'fake_device_2'));
      await phone.click({ role: 'button', name: 'Join the visit' });
      await doctor.click({ role: 'button', name: 'Admit Fay Flip' });
      await Promise.all([expectConnectedTo(doctor, 1), expectConnectedTo(phone, 1)]);
      const camera = () => phone.evaluate(() => document.querySelector('#self-video').srcObject?.getVideoTracks()[0]?.getSettings().deviceId);
      const sent = () => phone.evaluate(() => window.__test.pcs.find((pc) => pc.connectionState !== 'closed').getSenders().find((s) => s.track?.kind === 'video')?.track.getSettings().deviceId);
      const before = await camera();
      assert.equal(await sent(), before);
      const label = () => phone.evaluate(() => document.querySelector('#self-video').srcObject?.getVideoTracks()[0]?.label);
      assert.equal(await label(), 'fake_device_2');
      await phone.click({ role: 'button', name: 'Flip' });
      await eventually('the other camera in the self view', async () => (await camera()) !== before);
      assert.equal(await label(), 'fake_device_0');
      assert.equal(await sent(), await camera(), 'the doctor is sent the new camera, on the same connection');
      assert.equal((await phone.pcStates()).length, 1, 'no new peer connection');
      await expectConnectedTo(doctor, 1);
      assert.ok((await phone.spoken()).some((s) => s.text === 'Switched camera.'));
      await phone.screenshot(`edges-${engine}-flipped-camera`);
    });

    it('no page broke the Content-Security-Policy or left its origin', () => {
      for (const p of people) {
        assert.deepEqual(p.problems.csp, []);
        assert.deepEqual(p.problems.offOrigin, []);
        assert.deepEqual(p.problems.pageErrors, []);
      }
    });
  });
}
