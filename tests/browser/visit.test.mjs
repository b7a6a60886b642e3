// A whole video visit against the real `bedside` binary, in Chromium and in Firefox: a doctor
// at a desk and a patient on a phone, in separate browser contexts; waiting room, admission,
// a real WebRTC call with decoded video both ways, chat through the phone's chat sheet, mute,
// a dropped signaling socket that comes back without a new admission, the end of the visit,
// and what each of them heard announced along the way.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { DESKTOP, ENGINES, PHONE, eventually, launchBrowser } from './lib/driver.js';
import { NetworkPath } from './lib/network.js';

const STEP_TIMEOUT = 45_000;

for (const engine of ENGINES) {
  describe(`a video visit in ${engine}`, () => {
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
            if (person) await person.screenshot(`visit-${engine}-${label}-${who}`).catch(() => {});
          }
        }
      });

    const tile = (id) => `#tiles li[data-participant="${id}"]`;
    const badgesOf = (person, id) => person.text(`${tile(id)} .badges`);
    /** The participant id of the other person, from this person's tiles. */
    const otherId = (person) => person.attr('#tiles li[data-participant]', 'data-participant');
    const connState = (person) => person.attr('#conn-status', 'data-state');

    /** A playing remote video whose decoded frame count keeps rising. */
    async function expectLiveVideo(person) {
      await eventually('a remote video that is playing', () =>
        person.evaluate(() => {
          const v = document.querySelector('#tiles li[data-participant] video');
          return v && v.readyState >= 2 && !v.paused && v.videoWidth > 0;
        }),
      );
      const start = await person.framesDecoded();
      await eventually('decoded video frames to keep rising', async () => (await person.framesDecoded()) >= start + 15);
    }

    before(async () => {
      // Each person reaches Bedside over their own network path, so the test can cut one.
      const origins = [await paths.doctor.listen(), await paths.patient.listen()];
      server = await startBedside({ env: { BEDSIDE_ALLOWED_ORIGINS: origins.join(',') } });
      paths.doctor.target(server.url);
      paths.patient.target(server.url);
      browser = await launchBrowser(engine);
      visit = await server.api.createVisit({ external_ref: 'browser-test', max_participants: 2 });
      visit.doctorToken = await server.api.token(visit.id, { role: 'doctor', identity: 'dr-lee', name: 'Dr Lee' });
      visit.patientToken = await server.api.token(visit.id, { role: 'patient', identity: 'patient-7731', name: 'Sam Rivera' });
      doctor = await browser.person({ viewport: DESKTOP });
      // The patient is on a phone.
      patient = await browser.person({ viewport: PHONE });
    });

    after(async () => {
      for (const person of [doctor, patient]) {
        if (person?.problems.consoleErrors.length) {
          console.log(`${engine} console errors (informational):\n  ${person.problems.consoleErrors.join('\n  ')}`);
        }
      }
      await browser?.close();
      await server?.stop();
      await paths.doctor.close();
      await paths.patient.close();
    });

    step('the doctor checks their camera and starts the visit', async () => {
      await doctor.goto(`${paths.doctor.origin}/#token=${visit.doctorToken}`);
      await doctor.waitFor({ role: 'heading', name: 'Check your camera and microphone' });
      // The token leaves the address bar as soon as the page has it.
      assert.ok(!doctor.url().includes('token='), 'the token is removed from the URL');
      await eventually('the camera preview', () => doctor.evaluate(() => document.querySelector('#precall-video').videoWidth > 0));
      await doctor.click({ role: 'button', name: 'Start the visit' });
      await doctor.waitFor({ css: '#lobby', text: 'No one is waiting.' });
      await eventually('the doctor to be connected', async () => (await connState(doctor)) === 'connected');
    });

    step('the patient checks their camera and lands in the waiting room', async () => {
      await patient.goto(`${paths.patient.origin}/#token=${visit.patientToken}`);
      await patient.waitFor({ role: 'heading', name: 'Check your camera and microphone' });
      await eventually('the camera preview', () => patient.evaluate(() => document.querySelector('#precall-video').videoWidth > 0));
      assert.ok((await patient.count({ css: '#camera-select option', hidden: true })) >= 1, 'the camera picker lists a device');
      assert.ok(await patient.fitsWidth(), 'the pre-call check fits 360 px');
      await patient.click({ role: 'button', name: 'Join the visit' });
      await patient.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      await eventually('the live connection status', async () => (await patient.text('#conn-status')) === 'Connected');
      assert.ok(await patient.fitsWidth(), 'the waiting room fits 360 px');
    });

    step('the doctor sees the patient waiting and admits them', async () => {
      await doctor.waitFor({ css: '#lobby-list li', text: 'Sam Rivera' });
      await eventually('the time waited', async () => /waiting \d+ s/.test(await doctor.text({ css: '#lobby-list li', text: 'Sam Rivera' })));
      await doctor.click({ role: 'button', name: 'Admit Sam Rivera' });
      await doctor.waitFor({ css: '#lobby', text: 'No one is waiting.' });
      await patient.waitFor('#screen-call');
      // A keyboard user lands on something they can see: the title over the video.
      const { tag, id, name, visible } = await patient.focused();
      assert.deepEqual({ tag, id, name, visible }, { tag: 'h1', id: 'call-title', name: 'Visit with Dr Lee', visible: true });
    });

    step('both browsers connect and show live remote video', async () => {
      for (const person of [doctor, patient]) {
        await eventually('connectionState "connected"', async () => {
          const states = await person.pcStates();
          return states.length === 1 && states[0] === 'connected';
        }, { timeout: 30_000 });
      }
      await Promise.all([expectLiveVideo(doctor), expectLiveVideo(patient)]);
      await doctor.waitFor({ css: '#tiles li[data-participant]', text: 'Sam Rivera' });
      await patient.waitFor({ css: '#tiles li[data-participant]', text: 'Dr Lee' });
      assert.ok(!(await patient.scrolls()), 'the call on a phone does not scroll');
    });

    step('chat goes both ways, through the phone chat sheet', async () => {
      // On the phone the chat is a sheet its button opens, with the message box focused.
      await patient.click({ role: 'button', name: 'Chat' });
      assert.equal((await patient.focused()).id, 'chat-input');
      await patient.type('Hello doctor, can you hear me?');
      await patient.press('Enter');
      await doctor.waitFor({ css: '#chat-list li', text: 'Sam Rivera: Hello doctor, can you hear me?' });
      await patient.waitFor({ css: '#chat-list li', text: 'You: Hello doctor, can you hear me?' });
      await doctor.fill({ role: 'textbox', name: 'Message' }, 'Yes, loud and clear.');
      await doctor.click({ role: 'button', name: 'Send' });
      await patient.waitFor({ css: '#chat-list li', text: 'Dr Lee: Yes, loud and clear.' });
      assert.ok((await patient.box('#chat-input')).inside, 'the message box is on screen');
      assert.ok((await patient.box('#tiles li[data-participant]')).inside, 'the doctor is still on screen');

      // Closed, the sheet counts what comes in on its button.
      await patient.press('Escape');
      assert.equal((await patient.focused()).id, 'btn-chat', 'focus back on the Chat button');
      await doctor.fill({ role: 'textbox', name: 'Message' }, 'Take your time.');
      await doctor.press('Enter');
      await patient.waitFor({ role: 'button', name: 'Chat: 1 new message' });
      await patient.click({ role: 'button', name: 'Chat' });
      await patient.waitFor({ css: '#chat-list li', text: 'Dr Lee: Take your time.' });
      assert.ok(!(await patient.isVisible('#btn-chat .count')), 'the count is cleared once read');
      await patient.press('Escape');
    });

    step('mute and camera are reflected on the other side', async () => {
      const patientId = await otherId(doctor);
      const doctorId = await otherId(patient);
      assert.ok(!(await badgesOf(doctor, patientId)).includes('Muted'), 'the patient starts unmuted');
      await patient.click({ role: 'button', name: 'Mute', exact: true });
      await eventually('the doctor to see the patient muted', async () => (await badgesOf(doctor, patientId)).includes('Muted'));
      await patient.click({ role: 'button', name: 'Unmute' });
      await eventually('the doctor to see the patient unmuted', async () => !(await badgesOf(doctor, patientId)).includes('Muted'));

      await doctor.click({ role: 'button', name: 'Mute', exact: true });
      await eventually('the patient to see the doctor muted', async () => (await badgesOf(patient, doctorId)).includes('Muted'));
      await doctor.click({ role: 'button', name: 'Camera off' });
      await eventually('the patient to see the doctor camera off', async () => (await badgesOf(patient, doctorId)).includes('Camera off'));
      await doctor.click({ role: 'button', name: 'Camera on' });
      await doctor.click({ role: 'button', name: 'Unmute' });
      await eventually('the doctor back on', async () => !/Muted|Camera off/.test(await badgesOf(patient, doctorId)));
    });

    step('a dropped signaling socket reconnects without a new admission', async () => {
      const patientId = await otherId(doctor);
      paths.patient.cut();
      await eventually('the patient to see the connection lost', async () => ['reconnecting', 'offline'].includes(await connState(patient)));
      await eventually('the doctor to see the patient reconnecting', async () => (await badgesOf(doctor, patientId)).includes('Reconnecting'));
      await patient.screenshot(`visit-${engine}-07a-patient-reconnecting`);
      await doctor.screenshot(`visit-${engine}-07a-doctor-sees-reconnecting`);
      // Long enough for at least one reconnect attempt to fail against the cut path.
      await new Promise((r) => setTimeout(r, 2000));
      paths.patient.restore();
      await eventually('the patient to reconnect', async () => (await connState(patient)) === 'connected', { timeout: 20_000 });
      await eventually('the doctor to see the patient back', async () => !(await badgesOf(doctor, patientId)).includes('Reconnecting'));
      assert.ok(await patient.isVisible('#screen-call'), 'the patient is still in the call');
      assert.ok(!(await patient.isVisible('#screen-waiting')), 'not back in the waiting room');
      assert.equal(await doctor.count('#lobby-list li'), 0, 'nobody waits for admission');

      const events = await server.api.events(visit.id);
      const kinds = events.filter((e) => e.identity === 'patient-7731').map((e) => e.kind);
      assert.equal(kinds.filter((k) => k === 'admitted').length, 1, `one admission only: ${kinds}`);
      assert.ok(kinds.includes('dropped') && kinds.includes('rejoined'), `the drop and the return are recorded: ${kinds}`);

      // Media never went through the signaling path: still flowing, and chat works again.
      await Promise.all([expectLiveVideo(doctor), expectLiveVideo(patient)]);
      await patient.click({ role: 'button', name: 'Chat' });
      await patient.type('Sorry, my connection dropped.');
      await patient.press('Enter');
      await doctor.waitFor({ css: '#chat-list li', text: 'Sam Rivera: Sorry, my connection dropped.' });
      await patient.press('Escape');
    });

    step('the doctor ends the visit and the patient sees the end screen', async () => {
      await doctor.click({ role: 'button', name: 'End visit', exact: true });
      await doctor.waitFor({ role: 'dialog', name: 'End the visit for everyone?' });
      await doctor.click({ role: 'button', name: 'End visit for everyone' });
      await patient.waitFor({ role: 'heading', name: 'The visit has ended' });
      assert.match(await patient.text('#final-text'), /The doctor ended the visit/);
      await doctor.waitFor({ role: 'heading', name: 'You ended the visit' });
      assert.ok(await patient.fitsWidth(), 'the end screen fits 360 px');
      const ended = await server.api.getVisit(visit.id);
      assert.equal(ended.status, 'ended');
      assert.equal(ended.ended_reason, 'ended_by_doctor');
      for (const person of [doctor, patient]) {
        assert.deepEqual(await person.pcStates(), [], 'peer connections are closed');
      }
    });

    step('each change was announced once, politely', async () => {
      const said = async (person) => (await person.spoken()).filter((s) => s.live === 'polite').map((s) => s.text);
      const once = (list, text) => assert.equal(list.filter((t) => t === text).length, 1, `"${text}" once in ${JSON.stringify(list)}`);
      const patientSaid = await said(patient);
      once(patientSaid, 'You are in the waiting room. Your doctor will let you in shortly.');
      once(patientSaid, 'You are in the visit with Dr Lee.');
      once(patientSaid, 'Connection lost. Reconnecting…');
      once(patientSaid, 'Connected again.');
      once(patientSaid, 'The visit has ended. The doctor ended the visit. Thank you. You can close this page.');
      const doctorSaid = await said(doctor);
      once(doctorSaid, 'Sam Rivera is waiting to be let in.');
      once(doctorSaid, 'Sam Rivera joined the visit.');
      once(doctorSaid, 'Sam Rivera lost connection. Waiting for them to come back.');
      once(doctorSaid, 'Sam Rivera is back.');
      for (const person of [doctor, patient]) {
        assert.deepEqual((await person.spoken()).filter((s) => s.live === 'assertive'), [], 'nothing assertive: there was no error');
      }
    });

    step('the pages stayed within the Content-Security-Policy and their own origin', async () => {
      for (const person of [doctor, patient]) {
        assert.deepEqual(await person.evaluate(() => window.__test.violations), [], 'no CSP violation');
        assert.deepEqual(person.problems.csp, [], 'no CSP report on the console');
        assert.deepEqual(person.problems.offOrigin, [], 'no request left the origin');
        assert.deepEqual(person.problems.pageErrors, [], 'no uncaught error');
      }
    });
  });
}
