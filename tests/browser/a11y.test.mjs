// Accessibility and the phone layout, in Chromium and Firefox against the real binary:
// - axe-core (WCAG 2.1 A and AA) on every screen a person sees, on a phone (360 x 740, touch)
//   and at a desk (1280 x 800): zero violations;
// - keyboard-only walkthroughs for a patient and a doctor, asserting where focus is (and that
//   it is visible) after each step;
// - the call on a phone, portrait and landscape: the remote video, the controls and the open
//   chat's message box all inside the viewport, nothing scrolling, the self view movable.
// Screenshots of each screen land in tests/browser/artifacts/a11y-*.png.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { DESKTOP, ENGINES, PHONE, eventually, launchBrowser } from './lib/driver.js';

const TIMEOUT = 120_000;
const LANDSCAPE = { width: 740, height: 360, touch: true };
const BLOCKED = `navigator.mediaDevices.getUserMedia = async () => { throw new DOMException('refused', 'NotAllowedError'); };`;

for (const engine of ENGINES) {
  describe(`accessibility and layout in ${engine}`, () => {
    let server;
    let browser;
    const people = new Set();

    before(async () => {
      server = await startBedside();
      browser = await launchBrowser(engine);
    });

    after(async () => {
      await browser?.close();
      await server?.stop();
    });

    async function person(viewport, init) {
      const p = await browser.person({ viewport, init });
      people.add(p);
      return p;
    }

    async function closeAll() {
      await Promise.all([...people].map((p) => p.close()));
      people.clear();
    }

    const link = (token) => `${server.url}/#token=${token}`;

    async function token(visit, role, identity, name) {
      return server.api.token(visit, { role, identity, name });
    }

    /** Opens a link and passes the pre-call check with its first button. */
    async function arrive(p, tokenValue, button) {
      await p.goto(link(tokenValue));
      await p.click({ role: 'button', name: button });
    }

    /** Runs axe on `p` as it is, keeps a screenshot, and records what it found. */
    function checker(size) {
      const found = {};
      const check = async (p, screen) => {
        // Let entrance work settle (fonts, the first video frame) before judging contrast.
        await new Promise((r) => setTimeout(r, 150));
        const violations = await p.axe();
        await p.screenshot(`a11y-${engine}-${size}-${screen}`);
        if (violations.length) found[screen] = violations;
      };
      return { check, found };
    }

    /** On a phone the waiting room is a sheet: open it (no-op on a wide screen). */
    async function openSheet(p, name) {
      if ((await p.attr(`#btn-${name}`, 'aria-expanded')) === 'false' && (await p.isVisible(`#btn-${name}`))) await p.click(`#btn-${name}`);
    }
    async function closeSheet(p, name) {
      if ((await p.attr(`#btn-${name}`, 'aria-expanded')) === 'true') await p.click(`#btn-${name}`);
    }

    for (const [size, viewport] of [['phone', PHONE], ['desktop', DESKTOP]]) {
      it(`axe finds no WCAG 2.1 A/AA violation on any screen of a visit (${size})`, { timeout: TIMEOUT }, async (t) => {
        t.after(closeAll);
        const { check, found } = checker(size);
        const visit = (await server.api.createVisit({ external_ref: 'a11y', max_participants: 4 })).id;

        const anon = await person(viewport);
        await anon.goto(server.url);
        await anon.waitFor({ role: 'heading', name: 'Bedside video visits' });
        await check(anon, 'landing');

        const doctor = await person(viewport);
        await doctor.goto(link(await token(visit, 'doctor', 'dr-a11y', 'Dr Ada Ames')));
        await doctor.waitFor({ role: 'button', name: 'Start the visit', enabled: true });
        await eventually('the preview', () => doctor.evaluate(() => document.querySelector('#precall-video').videoWidth > 0));
        await check(doctor, 'precall');
        await doctor.click({ role: 'button', name: 'Start the visit' });
        await doctor.waitFor('#screen-call');
        await check(doctor, 'call-doctor-alone');

        const patient = await person(viewport);
        await arrive(patient, await token(visit, 'patient', 'pt-a11y', 'Pat Parker'), 'Join the visit');
        await patient.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
        await check(patient, 'waiting-room');

        const blocked = await person(viewport, BLOCKED);
        await blocked.goto(link(await token(visit, 'patient', 'pt-blocked', 'Bo Blocked')));
        await blocked.waitFor({ css: '#precall-problems', text: 'access was blocked' });
        await check(blocked, 'precall-blocked');
        await blocked.click({ role: 'button', name: 'Join without camera and microphone' });
        await blocked.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });

        await doctor.waitFor({ css: '#lobby-list li', text: 'Bo Blocked', hidden: true });
        await doctor.waitFor({ css: '#lobby-list li', text: 'Pat Parker', hidden: true });
        await openSheet(doctor, 'lobby');
        await check(doctor, 'doctor-waiting-list');
        await doctor.click({ role: 'button', name: 'Deny Bo Blocked' });
        await blocked.waitFor({ role: 'heading', name: 'You were not let in' });
        await check(blocked, 'final-denied');
        await doctor.click({ role: 'button', name: 'Admit Pat Parker' });
        await closeSheet(doctor, 'lobby');
        await patient.waitFor('#screen-call');
        await eventually('both connected', async () => (await patient.pcStates())[0] === 'connected' && (await doctor.pcStates())[0] === 'connected', { timeout: 30_000 });
        await check(patient, 'call-patient');
        await check(doctor, 'call-doctor');

        await openSheet(patient, 'chat');
        await patient.fill({ role: 'textbox', name: 'Message' }, 'My throat hurts since Monday.');
        await patient.press('Enter');
        await openSheet(doctor, 'chat');
        await doctor.waitFor({ css: '#chat-list li', text: 'My throat hurts' });
        await doctor.fill({ role: 'textbox', name: 'Message' }, 'Thank you, let us have a look.');
        await doctor.press('Enter');
        await patient.waitFor({ css: '#chat-list li', text: 'let us have a look' });
        await check(patient, 'chat-patient');
        await check(doctor, 'chat-doctor');
        await closeSheet(patient, 'chat');
        await closeSheet(doctor, 'chat');

        await doctor.click({ role: 'button', name: 'End visit', exact: true });
        await doctor.waitFor({ role: 'dialog', name: 'End the visit for everyone?' });
        await check(doctor, 'end-dialog');
        await doctor.click({ role: 'button', name: 'Cancel' });

        // A guest let in and then removed.
        const guest = await person(viewport);
        await arrive(guest, await token(visit, 'guest', 'guest-a11y', 'Gil Guest'), 'Join the visit');
        await openSheet(doctor, 'lobby');
        await doctor.click({ role: 'button', name: 'Admit Gil Guest' });
        await closeSheet(doctor, 'lobby');
        await doctor.click({ role: 'button', name: 'Remove Gil Guest from the visit' });
        await guest.waitFor({ role: 'heading', name: 'You were removed from the visit' });
        await check(guest, 'final-removed');

        // The patient opens the link in another browser: this one stops.
        const again = await person(viewport);
        await again.goto(link(await token(visit, 'patient', 'pt-a11y', 'Pat Parker')));
        await again.click({ role: 'button', name: 'Join the visit' });
        await patient.waitFor({ role: 'heading', name: 'The visit continues in another window' });
        await check(patient, 'final-replaced');

        await again.waitFor('#screen-call');
        await doctor.click({ role: 'button', name: 'End visit', exact: true });
        await doctor.click({ role: 'button', name: 'End visit for everyone' });
        await again.waitFor({ role: 'heading', name: 'The visit has ended' });
        await check(again, 'final-ended');
        await doctor.waitFor({ role: 'heading', name: 'You ended the visit' });
        await check(doctor, 'final-ended-by-me');

        assert.deepEqual(found, {}, JSON.stringify(found, null, 1));
      });

      it(`axe finds no WCAG 2.1 A/AA violation on the other final screens (${size})`, { timeout: TIMEOUT }, async (t) => {
        t.after(closeAll);
        const { check, found } = checker(size);
        const final = async (screen, tokenValue, heading, button = 'Join the visit', init) => {
          const p = await person(viewport, init);
          if (button) await arrive(p, tokenValue, button);
          else await p.goto(link(tokenValue));
          await p.waitFor({ role: 'heading', name: heading });
          await check(p, screen);
          await p.close();
          people.delete(p);
        };

        const visit = (await server.api.createVisit({ external_ref: 'a11y-finals', max_participants: 2 })).id;
        const leaver = await person(viewport);
        await arrive(leaver, await token(visit, 'patient', 'pt-leave', 'Lee Leaver'), 'Join the visit');
        await leaver.click({ role: 'button', name: 'Leave the waiting room' });
        await leaver.waitFor({ role: 'heading', name: 'You left the visit' });
        await check(leaver, 'final-left');

        await final('final-link-invalid', 'not-a-token', 'This link does not work', null);
        const now = Math.floor(Date.now() / 1000);
        await final('final-link-expired', server.mint({ visit, sub: 'pt-late', role: 'patient', name: 'Liz Late', iat: now - 900, nbf: now - 900, exp: now - 120 }), 'This link has expired');
        await final('final-not-found', server.mint({ visit: randomUUID(), sub: 'pt-lost', role: 'patient', name: 'Lou Lost' }), 'This visit is not available');

        // Two waiting fill a visit for two.
        for (const who of ['pt-one', 'pt-two']) {
          const p = await person(viewport);
          await arrive(p, await token(visit, 'patient', who, who), 'Join the visit');
          await p.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
        }
        await final('final-visit-full', await token(visit, 'patient', 'pt-three', 'Tia Three'), 'This visit is full');

        const later = (await server.api.createVisit({ not_before: new Date(Date.now() + 3600_000).toISOString() })).id;
        await final('final-not-started', await token(later, 'patient', 'pt-early', 'Ed Early'), 'This visit has not started yet');

        // A link the clinic revoked (removing its identity) before it was used: the server
        // refuses it with access_revoked.
        const fresh = (await server.api.createVisit()).id;
        const revoked = await token(fresh, 'patient', 'pt-revoked', 'Ray Voked');
        await server.api.removeParticipant(fresh, 'pt-revoked');
        await final('final-revoked', revoked, 'This link is no longer valid');

        // A single-use link: its holder reloads the page and keeps their place (the resume
        // token outlives the reload; a new join with the link would be refused), and anyone
        // opening it afterwards is told it was used.
        const once = await server.api.token(fresh, { role: 'patient', identity: 'pt-once', name: 'Una Once', single_use: true });
        const holder = await person(viewport);
        await arrive(holder, once, 'Join the visit');
        await holder.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
        // A tab that passed the pre-call check goes straight back in after a reload.
        await holder.goto(`${server.url}/`);
        await holder.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
        await final('final-link-used', once, 'This link has already been used');

        if (engine === 'chromium') {
          // A close that means a client error comes from a stand-in for /ws. Playwright can
          // stand in for a WebSocket; puppeteer cannot, so this one is Chromium only.
          for (const [screen, frames, code, heading] of [
            ['final-error', [], 1009, 'Something went wrong'],
          ]) {
            const p = await person(viewport);
            // The SDK names the visit in the URL (`/ws?visit=...`).
            await p.page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
              ws.onMessage(() => {
                for (const frame of frames) ws.send(JSON.stringify(frame));
                ws.close({ code });
              });
            });
            await arrive(p, await token(visit, 'patient', `pt-${screen}`, 'Ray Voked'), 'Join the visit');
            await p.waitFor({ role: 'heading', name: heading });
            await check(p, screen);
          }
        }
        assert.deepEqual(found, {}, JSON.stringify(found, null, 1));
      });
    }

    /** Presses Tab until `name` (a substring of the focused element's name or its id) has focus. */
    async function tabTo(p, want, { max = 25, back = false } = {}) {
      for (let i = 0; i < max; i++) {
        await p.press(back ? 'Shift+Tab' : 'Tab');
        const f = await p.focused();
        if (f.id === want || f.name === want) return f;
      }
      throw new Error(`${want} is not reachable with ${back ? 'Shift+' : ''}Tab (focus: ${JSON.stringify(await p.focused())})`);
    }

    /** Focus is on `id` or the element named `name`, visible, with a ring drawn. */
    async function focusIs(p, expected, what) {
      const f = await p.focused();
      const match = expected.id ? f.id === expected.id : f.name === expected.name;
      if (!(match && f.visible && f.ring)) await p.screenshot(`a11y-${engine}-focus-failure`);
      assert.ok(match && f.visible && f.ring, `${what}: focus should be on ${JSON.stringify(expected)} (visible, with a ring), is on ${JSON.stringify(f)}`);
    }

    it('a patient on a phone, keyboard only: pre-call, waiting room, call, chat, leave', { timeout: TIMEOUT }, async (t) => {
      t.after(closeAll);
      const visit = (await server.api.createVisit({ external_ref: 'kbd-patient' })).id;
      const doctor = await person(DESKTOP);
      await arrive(doctor, await token(visit, 'doctor', 'dr-kbd', 'Dr Kay'), 'Start the visit');
      const p = await person(PHONE);
      await p.goto(link(await token(visit, 'patient', 'pt-kbd', 'Kim Keys')));
      await p.waitFor({ role: 'button', name: 'Join the visit', enabled: true });
      assert.equal((await p.focused()).name, 'Check your camera and microphone', 'the page opens on its heading');
      await tabTo(p, 'camera-select');
      await tabTo(p, 'mic-select');
      await tabTo(p, 'Join the visit');
      await focusIs(p, { name: 'Join the visit' }, 'the join button');
      await p.press('Enter');
      await p.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      await focusIs(p, { name: 'Your doctor will let you in shortly' }, 'arriving in the waiting room');
      await tabTo(p, 'Leave the waiting room');

      await doctor.click({ role: 'button', name: 'Admit Kim Keys' });
      await p.waitFor('#screen-call');
      await focusIs(p, { id: 'call-title' }, 'entering the call');

      // The self view moves with the arrow keys.
      await tabTo(p, 'self-view');
      await focusIs(p, { id: 'self-view' }, 'the self view');
      await p.press('ArrowUp');
      await p.press('ArrowLeft');
      assert.equal(await p.attr('#self-view', 'data-corner'), 'top-left');

      await tabTo(p, 'Mute');
      await p.press('Enter');
      await focusIs(p, { name: 'Unmute' }, 'after muting, the same button (now Unmute)');
      await p.press('Enter');
      await tabTo(p, 'btn-chat');
      await p.press('Enter');
      await focusIs(p, { id: 'chat-input' }, 'opening the chat');
      await p.type('Typed without a mouse');
      await p.press('Enter');
      await doctor.waitFor({ css: '#chat-list li', text: 'Kim Keys: Typed without a mouse' });
      await focusIs(p, { id: 'chat-input' }, 'after sending');
      await p.press('Escape');
      await focusIs(p, { id: 'btn-chat' }, 'closing the chat');
      await tabTo(p, 'Leave');
      await p.press('Enter');
      await p.waitFor({ role: 'heading', name: 'You left the visit' });
      await focusIs(p, { name: 'You left the visit' }, 'the final screen');
    });

    it('a doctor, keyboard only: start, admit and deny from the waiting list while others knock, end the visit', { timeout: TIMEOUT }, async (t) => {
      t.after(closeAll);
      const visit = (await server.api.createVisit({ external_ref: 'kbd-doctor', max_participants: 5 })).id;
      const d = await person(DESKTOP);
      await d.goto(link(await token(visit, 'doctor', 'dr-keys', 'Dr Keys')));
      await d.waitFor({ role: 'button', name: 'Start the visit', enabled: true });
      await tabTo(d, 'Start the visit');
      await d.press('Enter');
      await d.waitFor('#screen-call');
      await focusIs(d, { id: 'call-title' }, 'entering the call');

      const knock = async (identity, name) => {
        const p = await person(DESKTOP);
        await arrive(p, await token(visit, 'patient', identity, name), 'Join the visit');
        await d.waitFor({ css: '#lobby-list li', text: name });
        return p;
      };
      await knock('pt-1', 'Ann One');
      await knock('pt-2', 'Ben Two');

      await tabTo(d, 'Admit Ann One');
      await d.press('Enter');
      // Focus moves when the server's new waiting list arrives.
      await d.waitFor({ css: '#lobby-list li', text: 'Ann One', state: 'gone' });
      await focusIs(d, { name: 'Admit Ben Two' }, 'after admitting, the next person in the list');

      await tabTo(d, 'Deny Ben Two');
      // Someone else knocks while focus is on Ben's Deny: the list changes, focus stays.
      await knock('pt-3', 'Cy Three');
      await focusIs(d, { name: 'Deny Ben Two' }, 'while the list changed around it');
      await d.press('Enter');
      await d.waitFor({ css: '#lobby-list li', text: 'Ben Two', state: 'gone' });
      await focusIs(d, { name: 'Admit Cy Three' }, 'after denying, the next person in the list');
      await d.press('Enter');
      await d.waitFor({ css: '#lobby-list li', text: 'Cy Three', state: 'gone' });
      await focusIs(d, { id: 'lobby-title' }, 'after the last one, the waiting room heading');

      await tabTo(d, 'End visit');
      await d.press('Enter');
      await d.waitFor({ role: 'dialog', name: 'End the visit for everyone?' });
      await focusIs(d, { name: 'Cancel' }, 'the dialog opens on its safe choice');
      await d.press('Escape');
      await d.waitFor({ role: 'dialog', name: 'End the visit for everyone?', state: 'gone' });
      await focusIs(d, { name: 'End visit' }, 'after cancelling, back on End visit');
      await d.press('Enter');
      await tabTo(d, 'End visit for everyone');
      await d.press('Enter');
      await d.waitFor({ role: 'heading', name: 'You ended the visit' });
      await focusIs(d, { name: 'You ended the visit' }, 'the final screen');
    });

    it('a doctor on a phone, keyboard only: the waiting list is a sheet', { timeout: TIMEOUT }, async (t) => {
      t.after(closeAll);
      const visit = (await server.api.createVisit({ external_ref: 'kbd-doctor-phone' })).id;
      const d = await person(PHONE);
      await arrive(d, await token(visit, 'doctor', 'dr-phone', 'Dr Phone'), 'Start the visit');
      await d.waitFor('#screen-call');
      const p = await person(PHONE);
      await arrive(p, await token(visit, 'patient', 'pt-phone', 'Mo Mobile'), 'Join the visit');
      await d.waitFor({ role: 'button', name: 'Waiting: 1 person waiting' });
      await tabTo(d, 'btn-lobby');
      await d.press('Enter');
      await focusIs(d, { name: 'Admit Mo Mobile' }, 'opening the waiting room sheet');
      await d.press('Enter');
      await d.waitFor({ css: '#lobby-list li', text: 'Mo Mobile', state: 'gone' });
      await focusIs(d, { id: 'lobby-title' }, 'the list is empty: its heading');
      await d.press('Escape');
      await focusIs(d, { id: 'btn-lobby' }, 'closing the sheet');
      assert.ok(!(await d.isVisible('#lobby')), 'the sheet is closed');
    });

    for (const [shape, viewport] of [['portrait', PHONE], ['landscape', LANDSCAPE]]) {
      it(`the call on a phone (${shape}): video, controls and the open chat are all on screen, nothing scrolls`, { timeout: TIMEOUT }, async (t) => {
        t.after(closeAll);
        const visit = (await server.api.createVisit({ external_ref: `layout-${shape}` })).id;
        const doctor = await person(DESKTOP);
        await arrive(doctor, await token(visit, 'doctor', 'dr-layout', 'Dr Layout'), 'Start the visit');
        // Wake lock requests are recorded: the call asks the phone to keep its screen on.
        const p = await person(viewport, `window.__wakeLocks = 0; if (navigator.wakeLock) { const request = navigator.wakeLock.request.bind(navigator.wakeLock); navigator.wakeLock.request = (type) => { window.__wakeLocks += 1; return request(type); }; }`);
        await arrive(p, await token(visit, 'patient', 'pt-layout', 'Lay Out'), 'Join the visit');
        await doctor.click({ role: 'button', name: 'Admit Lay Out' });
        await p.waitFor({ css: '#tiles li', text: 'Dr Layout' });
        await eventually('video playing', () => p.evaluate(() => document.querySelector('#tiles video')?.videoWidth > 0), { timeout: 30_000 });

        const inside = async (what) => {
          for (const css of what) {
            const box = await p.box(css);
            assert.ok(box?.inside, `${css} is inside the ${viewport.width}x${viewport.height} viewport: ${JSON.stringify(box)}`);
          }
        };
        await inside(['#tiles li video', '#controls', '#btn-mic', '#btn-leave', '#self-view', '#call-title']);
        const video = await p.box('#tiles li');
        assert.ok((video.bottom - video.top) * (video.right - video.left) > 0.5 * viewport.width * viewport.height, `the remote video fills most of the screen: ${JSON.stringify(video)}`);
        assert.ok(!(await p.scrolls()), 'the page does not scroll');
        assert.ok(!(await p.isVisible('#btn-flip')), 'no Flip button with a single camera');
        await p.screenshot(`a11y-${engine}-layout-${shape}-call`);

        await p.click({ role: 'button', name: 'Chat' });
        await doctor.fill({ role: 'textbox', name: 'Message' }, 'Can you see me?');
        await doctor.press('Enter');
        await p.waitFor({ css: '#chat-list li', text: 'Can you see me?' });
        await inside(['#chat-input', '#chat-form button', '#tiles li video', '#controls']);
        assert.ok(!(await p.scrolls()), 'with the chat open, the page does not scroll');
        await p.screenshot(`a11y-${engine}-layout-${shape}-chat-open`);
        await p.press('Escape');

        // The self view goes where it is dragged (to the nearest corner).
        const self = await p.box('#self-view');
        const stage = await p.box('#stage');
        await p.page.mouse.move((self.left + self.right) / 2, (self.top + self.bottom) / 2);
        await p.page.mouse.down();
        await p.page.mouse.move(stage.left + 40, stage.top + 60, { steps: 5 });
        await p.page.mouse.up();
        assert.equal(await p.attr('#self-view', 'data-corner'), 'top-left');
        await inside(['#self-view']);
        await p.screenshot(`a11y-${engine}-layout-${shape}-self-view-moved`);

        if (await p.evaluate(() => Boolean(navigator.wakeLock))) assert.ok((await p.evaluate(() => window.__wakeLocks)) >= 1, 'a screen wake lock was asked for');

        // Sent to the background (simulated: headless browsers keep every page visible).
        await p.evaluate(() => {
          Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
          document.dispatchEvent(new Event('visibilitychange'));
        });
        assert.equal(await p.evaluate(() => document.title), 'Call may pause · Bedside');
        await p.evaluate(() => {
          Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
          document.dispatchEvent(new Event('visibilitychange'));
        });
        await p.waitFor({ css: '#background-notice', text: 'may have paused' });
        await inside(['#background-notice']);
        await p.screenshot(`a11y-${engine}-layout-${shape}-back-from-background`);
        await p.click({ role: 'button', name: 'OK' });
        assert.ok(!(await p.isVisible('#background-notice')));
      });
    }
  });
}
