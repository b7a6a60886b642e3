// The clinic's day in the web client, in Chromium and in Firefox against the real binary:
// a provider (on a phone, 360 px) with three patients (phones) across three visits. The
// dashboard lists them in knock order with the consent one of them gave; the patients' waiting
// screens say where they stand, how long it will likely take, and whether the provider is
// free; a message to one and to all reaches the right waiting screens; "See patient" (take,
// then Admit) connects a call; the Invite button yields a link a guest opens and waits with;
// "Back to queue" returns to the dashboard, whose socket stayed open; a transfer (REST) moves
// a patient to another provider's dashboard (at a desk) without the keyboard user's focus
// being dropped. axe (WCAG 2.1 A and AA) on the consent screen, the dashboard, the waiting
// screen and the invite dialog. Screenshots: tests/browser/artifacts/clinic-*.png.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { DESKTOP, ENGINES, PHONE, eventually, launchBrowser } from './lib/driver.js';

const STEP_TIMEOUT = 60_000;
const TERMS = 'I agree to be seen by video.\nMy data stays with the clinic.';

for (const engine of ENGINES) {
  describe(`the clinic's day in ${engine}`, () => {
    let server;
    let browser;
    let provider;
    let other;
    let guest;
    const patients = [];
    const visits = [];
    const names = ['Sam Rivera', 'Kim Lee', 'Alex Moreau'];
    let broken = false;
    let shot = 0;

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
          const people = [['provider', provider], ['other', other], ['guest', guest], ...patients.map((p, i) => [`patient${i + 1}`, p])];
          for (const [who, person] of people) if (person) await person.screenshot(`clinic-${engine}-${label}-${who}`).catch(() => {});
        }
      });

    const axeClean = async (person, what) => {
      await new Promise((r) => setTimeout(r, 150));
      const violations = await person.axe();
      assert.deepEqual(violations, [], `axe on ${what}: ${JSON.stringify(violations, null, 1)}`);
      assert.ok(await person.fitsWidth(), `${what} fits its width`);
    };
    const queueNames = (person) => person.evaluate(() => [...document.querySelectorAll('#queue-list > li .name')].map((n) => n.textContent));
    /** On a phone the call's waiting room is a sheet: open it (no-op when open). */
    const openLobby = async (person) => {
      if ((await person.attr('#btn-lobby', 'aria-expanded')) === 'false') await person.click('#btn-lobby');
    };
    const messages = (person) => person.evaluate(() => [...document.querySelectorAll('#provider-messages li')].map((li) => li.textContent));

    before(async () => {
      server = await startBedside({ env: { BEDSIDE_CLINIC__DEFAULT_CONSULTATION_SECS: '600' } });
      browser = await launchBrowser(engine);
      for (const [i, name] of names.entries()) {
        const visit = await server.api.createVisit({
          provider: 'dr-who',
          external_ref: `appt-${i + 1}`,
          ...(i === 0 ? { consent: { version: '2026-11', text: TERMS } } : {}),
        });
        visit.patientToken = await server.api.token(visit.id, { role: 'patient', identity: `patient-${i + 1}`, name });
        visits.push(visit);
      }
      provider = await browser.person({ viewport: PHONE });
    });

    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    step('the provider opens the dashboard from their link', async () => {
      const { join_url } = await server.api.providerToken('dr-who', { name: 'Dr Who' });
      await provider.goto(join_url);
      await provider.waitFor({ role: 'heading', name: 'Your waiting patients' });
      await provider.waitFor({ css: '#queue-empty', text: 'No one is waiting.' });
      await provider.waitFor({ css: '#dashboard-who', text: 'Signed in as Dr Who.' });
      await provider.click({ css: 'input[name="presence"][value="available"]' });
      await provider.waitFor({ css: '#presence-shown', text: 'see you as available' });
      await provider.waitFor({ css: '#presence-shown', text: 'see you as available' });
    });

    step('the first patient agrees to the consent and waits', async () => {
      const p = await browser.person({ viewport: PHONE });
      patients.push(p);
      await p.goto(`${server.url}/#token=${visits[0].patientToken}`);
      await p.click({ role: 'button', name: 'Join the visit' });
      await p.waitFor({ role: 'heading', name: 'Before you join' });
      assert.match(await p.text('#consent-text'), /I agree to be seen by video\./);
      assert.equal(await p.text('#consent-version'), '2026-11');
      await axeClean(p, 'the consent screen (360 px)');
      // Not in the queue before agreeing.
      assert.deepEqual(await server.api.queue('dr-who'), []);
      await p.click({ role: 'button', name: 'I agree' });
      await p.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      await p.waitFor({ css: '#waiting-position', text: 'You are next in line.' });
    });

    step('someone who does not agree never knocks', async () => {
      const token = await server.api.token(visits[0].id, { role: 'guest', identity: 'relative-1', name: 'Jo Rivera' });
      const jo = await browser.person({ viewport: PHONE });
      try {
        await jo.goto(`${server.url}/#token=${token}`);
        await jo.click({ role: 'button', name: 'Join the visit' });
        await jo.waitFor({ role: 'heading', name: 'Before you join' });
        await jo.click({ role: 'button', name: 'I do not agree' });
        await jo.waitFor({ role: 'heading', name: 'You did not join the visit' });
        assert.deepEqual((await server.api.queue('dr-who')).map((e) => e.participant.name), [names[0]]);
        const events = await server.api.events(visits[0].id);
        assert.ok(!events.some((e) => e.kind === 'consented' && e.identity === 'relative-1'), 'no consent recorded');
        assert.deepEqual(await queueNames(provider), [names[0]]);
      } finally {
        await jo.close();
      }
    });

    step('two more patients knock, and the dashboard lists all three in knock order', async () => {
      for (const i of [1, 2]) {
        const p = await browser.person({ viewport: PHONE });
        patients.push(p);
        await p.goto(`${server.url}/#token=${visits[i].patientToken}`);
        await p.click({ role: 'button', name: 'Join the visit' });
        await p.waitFor({ css: '#waiting-position', text: `You are number ${i + 1} in line.` });
      }
      await eventually('three patients on the dashboard', async () => (await queueNames(provider)).length === 3);
      assert.deepEqual(await queueNames(provider), names);
      const first = await provider.text({ css: '#queue-list > li', text: names[0] });
      assert.match(first, /✓ Consent given \(version 2026-11\)/);
      assert.match(first, /waiting \d+/);
      assert.equal(await provider.text('#queue-title'), 'Queue (3)');
    });

    step("each patient's pre-call check shows in their row, in words, as the server has it", async () => {
      // The patients' pages send `precheck` once they wait; the provider's queue carries it.
      const networks = () => provider.evaluate(() => [...document.querySelectorAll('#queue-list > li')].map((li) => li.querySelector('.precheck')?.dataset.network ?? null));
      await eventually('three pre-call results on the dashboard', async () => (await networks()).every((n) => n), { timeout: 30_000 });
      const rest = await server.api.queue('dr-who');
      assert.deepEqual(await networks(), rest.map((e) => e.precheck?.network ?? null));
      const first = await provider.text({ css: '#queue-list > li', text: names[0] });
      // Text, not colour alone: the devices and the network are named.
      assert.match(first, /✓ camera, ✓ microphone\. /);
      assert.ok(rest.every((e) => e.precheck.camera === true && e.precheck.microphone === true), JSON.stringify(rest));
    });

    step('each waiting screen says the place, the expected wait and the provider, once each', async () => {
      const third = patients[2];
      await third.waitFor({ css: '#waiting-eta', text: 'Expected wait: about' });
      await third.waitFor({ css: '#waiting-provider', text: 'Dr Who is available.' });
      const spoken = (await third.spoken()).map((s) => s.text);
      // Each line is said once: in the arrival announcement if the first `waiting` frame had
      // it (filled while the screen was still hidden, which nobody hears), else as it appears.
      assert.ok(spoken.some((t) => t.startsWith('You are in the waiting room.')), JSON.stringify(spoken));
      for (const line of ['You are number 3 in line.', 'Dr Who is available.']) {
        assert.equal(spoken.filter((t) => t.includes(line)).length, 1, `"${line}" said once: ${JSON.stringify(spoken)}`);
      }
      await axeClean(third, 'the waiting screen with position and wait (360 px)');
      await axeClean(provider, 'the dashboard (360 px)');
    });

    step('a message to one patient and one to everyone reach the right waiting screens', async () => {
      await provider.fill({ role: 'textbox', name: `Message to ${names[1]}` }, 'Your results are in, see you soon.');
      // The box is the visit's (a message reaches everyone waiting in it), and says to whom.
      await provider.click({ role: 'button', name: `Send message to ${names[1]}`, exact: true });
      await patients[1].waitFor({ css: '#provider-messages li', text: 'Your results are in' });
      // By keyboard: type and press Enter.
      await provider.fill({ role: 'textbox', name: 'Message to everyone waiting' }, 'Running ten minutes late.');
      await provider.press('Enter');
      for (const p of patients) await p.waitFor({ css: '#provider-messages li', text: 'Running ten minutes late.' });
      assert.equal((await messages(patients[0])).length, 1, 'the first patient got only the message to all');
      assert.equal((await messages(patients[2])).length, 1);
      assert.equal((await messages(patients[1])).length, 2);
      const heard = await patients[1].spoken();
      assert.ok(heard.some((s) => s.text.includes('Your results are in')), `the message is read out: ${JSON.stringify(heard)}`);
    });

    step('"See patient" takes the visit, the provider admits, and the call connects', async () => {
      await provider.click({ role: 'button', name: `See patient ${names[0]}` });
      await provider.waitFor('#screen-call');
      await openLobby(provider);
      await provider.click({ role: 'button', name: `Admit ${names[0]}` });
      await patients[0].waitFor('#screen-call');
      await eventually('a connected call', async () => (await provider.pcStates()).includes('connected') && (await patients[0].pcStates()).includes('connected'), { timeout: 30_000 });
      // The others now see the provider busy.
      await patients[1].waitFor({ css: '#waiting-provider', text: 'Dr Who is with another patient.' });
      const events = await server.api.events(visits[0].id);
      assert.ok(events.some((e) => e.kind === 'taken' && e.identity === 'dr-who'), 'the take is in the trail');
    });

    step('the Invite button yields a link a guest opens and waits with', async () => {
      await provider.click({ role: 'button', name: 'Invite' });
      await provider.waitFor({ role: 'dialog', name: 'Invite a guest' });
      assert.equal((await provider.focused()).id, 'invite-name', 'focus starts on the name');
      await axeClean(provider, 'the invite dialog (360 px)');
      await provider.fill({ role: 'textbox', name: "Guest's name" }, 'Ana Interpreter');
      await provider.press('Enter');
      await provider.waitFor({ css: '#invite-result', text: 'Link for Ana Interpreter' });
      assert.equal((await provider.focused()).id, 'invite-copy', 'focus moves to Copy link');
      const link = await provider.evaluate(() => document.querySelector('#invite-link').value);
      assert.match(link, /#token=/);
      await axeClean(provider, 'the invite dialog with its link (360 px)');
      // The clipboard as the page sees it (headless browsers differ in what they allow): the
      // link itself goes there, and the dialog says so.
      await provider.evaluate(() => {
        window.__copied = null;
        Object.defineProperty(navigator, 'clipboard', { configurable: true, value: { writeText: async (text) => void (window.__copied = text) } });
      });
      await provider.click({ role: 'button', name: 'Copy link' });
      await provider.waitFor({ css: '#invite-copied', text: 'Link copied.' });
      assert.equal(await provider.evaluate(() => window.__copied), await provider.evaluate(() => document.querySelector('#invite-link').value));
      await provider.click({ role: 'button', name: 'Done' });
      assert.equal((await provider.focused()).id, 'btn-invite', 'focus returns to Invite');

      guest = await browser.person({ viewport: PHONE });
      await guest.goto(link);
      await guest.click({ role: 'button', name: 'Join the visit' });
      // This visit asks for consent: the guest agrees like the patient did.
      await guest.click({ role: 'button', name: 'I agree' });
      await guest.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      await openLobby(provider);
      await provider.waitFor({ css: '#lobby-list li', text: 'Ana Interpreter' });
      const events = await server.api.events(visits[0].id);
      assert.ok(events.some((e) => e.kind === 'invited' && e.role === 'guest'), 'the invite is in the trail');
    });

    step('"Back to queue" returns to the dashboard, which stayed connected', async () => {
      await provider.click({ role: 'button', name: 'Back to queue' });
      await provider.waitFor({ role: 'heading', name: 'Your waiting patients' });
      const focus = await provider.focused();
      assert.equal(focus.id, 'queue-title', 'focus lands on the queue');
      // The guest waits in the provider's visit, so in their queue, after the others.
      assert.deepEqual(await queueNames(provider), [...names.slice(1), 'Ana Interpreter']);
      await provider.waitFor({ css: '#presence-shown', text: 'see you as available' });
      // Keyboard only: from the heading into the first patient's row, each stop visible.
      await provider.press('Tab');
      let f = await provider.focused();
      assert.deepEqual([f.name, f.visible, f.ring], [`See patient ${names[1]}`, true, true]);
      await provider.press('Tab');
      f = await provider.focused();
      assert.deepEqual([f.name, f.visible, f.ring], [`Message to ${names[1]}`, true, true]);
      // The status by arrow keys, as a radio group works.
      await provider.evaluate(() => document.querySelector('input[name="presence"][value="available"]').focus());
      await provider.press('ArrowRight');
      await provider.waitFor({ css: '#presence-shown', text: 'see you as busy' });
      await patients[2].waitFor({ css: '#waiting-provider', text: 'Dr Who is with another patient.' });
      await provider.press('ArrowLeft');
      await provider.waitFor({ css: '#presence-shown', text: 'see you as available' });
    });

    step('a transfer moves a patient to another provider; focus stays on the patient it was on', async () => {
      other = await browser.person({ viewport: DESKTOP });
      const { join_url } = await server.api.providerToken('dr-two', { name: 'Dr Two' });
      await other.goto(join_url);
      await other.waitFor({ css: '#queue-empty', text: 'No one is waiting.' });
      // A keyboard user on the third patient's button when the row above goes away.
      await provider.evaluate((name) => document.querySelector(`#queue-list button[aria-label="See patient ${name}"]`).focus(), names[2]);
      await server.api.transfer(visits[1].id, 'dr-two');
      await other.waitFor({ css: '#queue-list > li', text: names[1] });
      await eventually('the patient gone from the first dashboard', async () => (await queueNames(provider)).length === 2);
      const focus = await provider.focused();
      assert.equal(focus.name, `See patient ${names[2]}`, 'focus was not dropped');
      await patients[1].waitFor({ css: '#waiting-provider', text: 'Dr Two' });
      await axeClean(other, 'the dashboard (desktop)');
    });
  });
}
