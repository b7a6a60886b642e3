// A whole video visit in headless Chromium against the real `bedside` binary: a doctor
// and a patient (phone-sized) in separate browser contexts; waiting room, admission, a
// real WebRTC call with decoded video both ways, chat, mute, a dropped signaling socket
// that comes back without a new admission, and the end of the visit.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { contrastProblems, eventually, fitsWidth, framesDecoded, launchBrowser, openPerson, pcStates, screenshot } from './lib/browser.js';
import { NetworkPath } from './lib/network.js';

const STEP_TIMEOUT = 45_000;

describe('a video visit in the browser', () => {
  let server;
  let browser;
  let doctor;
  let patient;
  let visit;
  const paths = { doctor: new NetworkPath(), patient: new NetworkPath() };
  let broken = false;
  let shot = 0;

  /** One step of the story: skipped once an earlier one failed; screenshots either way. */
  const step = (name, fn) =>
    it(name, { timeout: STEP_TIMEOUT }, async (t) => {
      if (broken) return t.skip('an earlier step failed');
      const label = `${String(++shot).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
      try {
        await fn();
      } catch (err) {
        broken = true;
        throw err;
      } finally {
        for (const [who, person] of [['doctor', doctor], ['patient', patient]]) {
          if (person) await screenshot(person.page, `visit-${label}-${who}`).catch(() => {});
        }
      }
    });

  const tileOf = (person, id) => person.page.locator(`#tiles li[data-participant="${id}"]`);
  const badgesOf = (person, id) => tileOf(person, id).locator('.badges').innerText();
  /** The participant id of the other person, from this person's tiles. */
  const otherId = (person) => person.page.locator('#tiles li[data-participant]').first().getAttribute('data-participant');

  /** A playing remote video whose decoded frame count keeps rising. */
  async function expectLiveVideo(person) {
    await eventually('a remote video that is playing', () =>
      person.page.evaluate(() => {
        const v = document.querySelector('#tiles li[data-participant] video');
        return v && v.readyState >= 2 && !v.paused && v.videoWidth > 0;
      }),
    );
    const start = await framesDecoded(person.page);
    await eventually('decoded video frames to keep rising', async () => (await framesDecoded(person.page)) >= start + 15);
  }

  before(async () => {
    // Each person reaches Bedside over their own network path, so the test can cut one.
    const origins = [await paths.doctor.listen(), await paths.patient.listen()];
    server = await startBedside({ env: { BEDSIDE_ALLOWED_ORIGINS: origins.join(',') } });
    paths.doctor.target(server.url);
    paths.patient.target(server.url);
    browser = await launchBrowser();
    visit = await server.api.createVisit({ external_ref: 'browser-test', max_participants: 2 });
    visit.doctorToken = await server.api.token(visit.id, { role: 'doctor', identity: 'dr-lee', name: 'Dr Lee' });
    visit.patientToken = await server.api.token(visit.id, { role: 'patient', identity: 'patient-7731', name: 'Sam Rivera' });
    doctor = await openPerson(browser);
    // The patient is on a phone.
    patient = await openPerson(browser, { viewport: { width: 360, height: 740 } });
  });

  after(async () => {
    for (const person of [doctor, patient]) {
      if (!person) continue;
      if (person.problems.consoleErrors.length) {
        console.log(`console errors (informational):\n  ${person.problems.consoleErrors.join('\n  ')}`);
      }
    }
    await browser?.close().catch(() => {});
    await server?.stop();
    await paths.doctor.close();
    await paths.patient.close();
  });

  step('the doctor checks their camera and starts the visit', async () => {
    const { page } = doctor;
    await page.goto(`${paths.doctor.origin}/#token=${visit.doctorToken}`);
    await page.getByRole('heading', { name: 'Check your camera and microphone' }).waitFor();
    // The token leaves the address bar as soon as the page has it.
    assert.ok(!page.url().includes('token='), 'the token is removed from the URL');
    await eventually('the camera preview', () => page.evaluate(() => document.querySelector('#precall-video').videoWidth > 0));
    await page.getByRole('button', { name: 'Start the visit' }).click();
    await page.locator('#lobby').getByText('No one is waiting.').waitFor();
    await eventually('the doctor to be connected', async () => (await page.locator('#conn-status').getAttribute('data-state')) === 'connected');
  });

  step('the patient checks their camera and lands in the waiting room', async () => {
    const { page } = patient;
    await page.goto(`${paths.patient.origin}/#token=${visit.patientToken}`);
    await page.getByRole('heading', { name: 'Check your camera and microphone' }).waitFor();
    await eventually('the camera preview', () => page.evaluate(() => document.querySelector('#precall-video').videoWidth > 0));
    const cameras = await page.locator('#camera-select option').count();
    assert.ok(cameras >= 1, 'the camera picker lists a device');
    assert.ok(await fitsWidth(page), 'the pre-call check fits 360 px');
    assert.deepEqual(await contrastProblems(page), [], 'the pre-call check reads well (WCAG AA contrast)');
    await page.getByRole('button', { name: 'Join the visit' }).click();
    await page.getByRole('heading', { name: 'Your doctor will let you in shortly' }).waitFor();
    await eventually('the live connection status', async () => (await page.locator('#conn-status').innerText()) === 'Connected');
    assert.ok(await fitsWidth(page), 'the waiting room fits 360 px');
    assert.deepEqual(await contrastProblems(page), [], 'the waiting room reads well (WCAG AA contrast)');
  });

  step('the doctor sees the patient waiting and admits them', async () => {
    const { page } = doctor;
    const row = page.locator('#lobby-list li', { hasText: 'Sam Rivera' });
    await row.waitFor();
    await eventually('the time waited', async () => /waiting \d+ s/.test(await row.innerText()));
    await page.getByRole('button', { name: 'Admit Sam Rivera' }).click();
    await page.locator('#lobby').getByText('No one is waiting.').waitFor();
    await patient.page.locator('#screen-call').waitFor();
  });

  step('both browsers connect and show live remote video', async () => {
    for (const person of [doctor, patient]) {
      await eventually('connectionState "connected"', async () => {
        const states = await pcStates(person.page);
        return states.length === 1 && states[0] === 'connected';
      }, { timeout: 30_000 });
    }
    await Promise.all([expectLiveVideo(doctor), expectLiveVideo(patient)]);
    await doctor.page.locator('#tiles li[data-participant]', { hasText: 'Sam Rivera' }).waitFor();
    await patient.page.locator('#tiles li[data-participant]', { hasText: 'Dr Lee' }).waitFor();
    assert.ok(await fitsWidth(patient.page), 'the call fits 360 px');
    for (const person of [doctor, patient]) {
      assert.deepEqual(await contrastProblems(person.page), [], 'the call reads well (WCAG AA contrast)');
    }
  });

  step('chat goes both ways', async () => {
    await patient.page.getByRole('textbox', { name: 'Message' }).fill('Hello doctor, can you hear me?');
    await patient.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await doctor.page.locator('#chat-log li', { hasText: 'Sam Rivera: Hello doctor, can you hear me?' }).waitFor();
    await patient.page.locator('#chat-log li', { hasText: 'You: Hello doctor, can you hear me?' }).waitFor();
    await doctor.page.getByRole('textbox', { name: 'Message' }).fill('Yes, loud and clear.');
    await doctor.page.getByRole('button', { name: 'Send' }).click();
    await patient.page.locator('#chat-log li', { hasText: 'Dr Lee: Yes, loud and clear.' }).waitFor();
  });

  step('mute and camera are reflected on the other side', async () => {
    const patientId = await otherId(doctor);
    const doctorId = await otherId(patient);
    assert.ok(!(await badgesOf(doctor, patientId)).includes('Muted'), 'the patient starts unmuted');
    await patient.page.getByRole('button', { name: 'Mute', exact: true }).click();
    await eventually('the doctor to see the patient muted', async () => (await badgesOf(doctor, patientId)).includes('Muted'));
    await patient.page.getByRole('button', { name: 'Unmute' }).click();
    await eventually('the doctor to see the patient unmuted', async () => !(await badgesOf(doctor, patientId)).includes('Muted'));

    await doctor.page.getByRole('button', { name: 'Mute', exact: true }).click();
    await eventually('the patient to see the doctor muted', async () => (await badgesOf(patient, doctorId)).includes('Muted'));
    await doctor.page.getByRole('button', { name: 'Camera off' }).click();
    await eventually('the patient to see the doctor camera off', async () => (await badgesOf(patient, doctorId)).includes('Camera off'));
    await doctor.page.getByRole('button', { name: 'Camera on' }).click();
    await doctor.page.getByRole('button', { name: 'Unmute' }).click();
    await eventually('the doctor back on', async () => !/Muted|Camera off/.test(await badgesOf(patient, doctorId)));
  });

  step('a dropped signaling socket reconnects without a new admission', async () => {
    const patientId = await otherId(doctor);
    paths.patient.cut();
    await eventually('the patient to see the connection lost', async () => ['reconnecting', 'offline'].includes(await patient.page.locator('#conn-status').getAttribute('data-state')));
    await eventually('the doctor to see the patient reconnecting', async () => (await badgesOf(doctor, patientId)).includes('Reconnecting'));
    await screenshot(patient.page, 'visit-07a-patient-reconnecting');
    await screenshot(doctor.page, 'visit-07a-doctor-sees-reconnecting');
    // Long enough for at least one reconnect attempt to fail against the cut path.
    await new Promise((r) => setTimeout(r, 2000));
    paths.patient.restore();
    await eventually('the patient to reconnect', async () => (await patient.page.locator('#conn-status').getAttribute('data-state')) === 'connected', { timeout: 20_000 });
    await eventually('the doctor to see the patient back', async () => !(await badgesOf(doctor, patientId)).includes('Reconnecting'));
    assert.ok(await patient.page.locator('#screen-call').isVisible(), 'the patient is still in the call');
    assert.ok(!(await patient.page.locator('#screen-waiting').isVisible()), 'not back in the waiting room');
    assert.equal(await doctor.page.locator('#lobby-list li').count(), 0, 'nobody waits for admission');

    const events = await server.api.events(visit.id);
    const kinds = events.filter((e) => e.identity === 'patient-7731').map((e) => e.kind);
    assert.equal(kinds.filter((k) => k === 'admitted').length, 1, `one admission only: ${kinds}`);
    assert.ok(kinds.includes('dropped') && kinds.includes('rejoined'), `the drop and the return are recorded: ${kinds}`);

    // Media never went through the signaling path: still flowing, and chat works again.
    await Promise.all([expectLiveVideo(doctor), expectLiveVideo(patient)]);
    await patient.page.getByRole('textbox', { name: 'Message' }).fill('Sorry, my connection dropped.');
    await patient.page.getByRole('textbox', { name: 'Message' }).press('Enter');
    await doctor.page.locator('#chat-log li', { hasText: 'Sam Rivera: Sorry, my connection dropped.' }).waitFor();
  });

  step('the doctor ends the visit and the patient sees the end screen', async () => {
    await doctor.page.getByRole('button', { name: 'End visit', exact: true }).click();
    await doctor.page.getByRole('dialog', { name: 'End the visit for everyone?' }).waitFor();
    await doctor.page.getByRole('button', { name: 'End visit for everyone' }).click();
    await patient.page.getByRole('heading', { name: 'The visit has ended' }).waitFor();
    assert.match(await patient.page.locator('#final-text').innerText(), /The doctor ended the visit/);
    await doctor.page.getByRole('heading', { name: 'You ended the visit' }).waitFor();
    assert.ok(await fitsWidth(patient.page), 'the end screen fits 360 px');
    const ended = await server.api.getVisit(visit.id);
    assert.equal(ended.status, 'ended');
    assert.equal(ended.ended_reason, 'ended_by_doctor');
    for (const person of [doctor, patient]) {
      assert.deepEqual(await pcStates(person.page), [], 'peer connections are closed');
    }
  });

  step('the pages stayed within the Content-Security-Policy and their own origin', async () => {
    for (const person of [doctor, patient]) {
      assert.deepEqual(await person.page.evaluate(() => window.__test.violations), [], 'no CSP violation');
      assert.deepEqual(person.problems.csp, [], 'no CSP report on the console');
      assert.deepEqual(person.problems.offOrigin, [], 'no request left the origin');
      assert.deepEqual(person.problems.pageErrors, [], 'no uncaught error');
    }
  });
});
