// Call quality in real browsers against the real `bedside` binary (docs/quality.md):
// - the pre-call network check with TURN reachable (the embedded server) and not, and what
//   the doctor sees of it in the waiting list, and the patient when the network is blocked;
// - two peers in a real call: the doctor's tile for the patient shows "good" from the
//   browsers' own getStats() reports; the patient's network (a namespace of its own, see
//   lib/netns.js) then loses 30% of its UDP packets and the tile turns "poor" within 15 s,
//   the patient sees their own weak-connection note, and the visit's quality summary
//   records it. (Chromium's Network.emulateNetworkConditions packetLoss was tried first: it
//   does not touch WebRTC media in this Chromium, and tc netem is not in this kernel.)

import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import { startBedside } from './lib/bedside.js';
import { DESKTOP, ENGINES, eventually, launchBrowser } from './lib/driver.js';
import { Netns, available as netnsAvailable } from './lib/netns.js';

const TIMEOUT = 60_000;

/** A UDP port on loopback that was free a moment ago. */
async function freeUdpPort() {
  const socket = createSocket('udp4');
  await new Promise((done) => socket.bind(0, '127.0.0.1', done));
  const { port } = socket.address();
  await new Promise((done) => socket.close(done));
  return port;
}
const SECRET = 'quality-turn-secret-0123456789';

for (const engine of ENGINES) {
  describe(`call quality in ${engine}`, () => {
    let browser;
    const servers = [];

    before(async () => {
      browser = await launchBrowser(engine);
    });

    after(async () => {
      await browser?.close();
      for (const s of servers) await s.stop();
    });

    async function start(env) {
      const server = await startBedside({ env });
      servers.push(server);
      return server;
    }

    /** A doctor in the call, a patient in the waiting room; both pages. */
    async function meet(server, { doctorBrowser = browser, patientBrowser = browser } = {}) {
      const visit = await server.api.createVisit({ max_participants: 2 });
      const doctorToken = await server.api.token(visit.id, { role: 'doctor', identity: 'dr-q', name: 'Dr Quinn' });
      const patientToken = await server.api.token(visit.id, { role: 'patient', identity: 'pt-q', name: 'Pat Lane' });
      const doctor = await doctorBrowser.person({ viewport: DESKTOP });
      const patient = await patientBrowser.person({ viewport: DESKTOP });
      await doctor.goto(`${server.url}/#token=${doctorToken}`);
      // A browser launched just now (the degraded call starts two) may take a while to open
      // its fake camera before the pre-call check offers to start: a startup wait only.
      await doctor.waitFor({ role: 'button', name: 'Start the visit' }, { timeout: 45_000 });
      await doctor.click({ role: 'button', name: 'Start the visit' });
      await doctor.waitFor({ css: '#lobby', text: 'No one is waiting.' });
      await patient.goto(`${server.url}/#token=${patientToken}`);
      await patient.click({ role: 'button', name: 'Join the visit' });
      await patient.waitFor({ role: 'heading', name: 'Your doctor will let you in shortly' });
      return { visit, doctor, patient };
    }

    /** The network result the doctor's waiting list shows for the patient. */
    const shownNetwork = (doctor) => doctor.attr('#lobby-list li .precheck', 'data-network');

    it('with TURN reachable the check passes and the doctor sees it', { timeout: TIMEOUT }, async () => {
      const server = await start({
        BEDSIDE_TURN__EMBEDDED: 'true',
        BEDSIDE_TURN__SECRET: SECRET,
        BEDSIDE_TURN__LISTEN: '127.0.0.1:0',
      });
      const { visit, doctor, patient } = await meet(server);
      await eventually('the precheck in the waiting list', () => shownNetwork(doctor), { timeout: 20_000 });
      // A real allocation on the embedded TURN server, over UDP.
      const pt = (await server.api.quality(visit.id)).participants.find((p) => p.identity === 'pt-q');
      assert.deepEqual(pt.precheck.turn, { udp: true }, JSON.stringify(pt.precheck));
      const text = await doctor.text('#lobby-list li .precheck');
      assert.match(text, /✓ camera, ✓ microphone/);
      // The row grew a line when the precheck arrived; Admit and Deny stay level with the
      // patient's name rather than sliding down under the doctor's pointer.
      const who = await doctor.box('#lobby-list li .who');
      for (const css of ['#lobby-list li button.admit', '#lobby-list li button.deny']) {
        const button = await doctor.box(css);
        assert.ok(Math.abs(button.top - who.top) <= 1, `${css} level with the name: ${JSON.stringify({ button, who })}`);
      }
      assert.notEqual(await shownNetwork(doctor), 'blocked', text);
      assert.ok(!(await patient.isVisible('#precheck-advice')), 'no advice when the network works');
      await doctor.close();
      await patient.close();
    });

    it('with TURN unreachable the check says blocked and the patient learns what to try', { timeout: TIMEOUT }, async () => {
      // TURN credentials for a server nobody runs (a UDP port just freed, not one browsers
      // refuse outright): no relay can be allocated, and the STUN entry answers nothing.
      const port = await freeUdpPort();
      const server = await start({
        BEDSIDE_TURN__SECRET: SECRET,
        BEDSIDE_TURN__URLS: `turn:127.0.0.1:${port}?transport=udp`,
        BEDSIDE_STUN_URLS: `stun:127.0.0.1:${port}`,
      });
      const { visit, doctor, patient } = await meet(server);
      await eventually('the precheck in the waiting list', async () => (await shownNetwork(doctor)) === 'blocked', { timeout: 25_000 });
      const pt = (await server.api.quality(visit.id)).participants.find((p) => p.identity === 'pt-q');
      assert.deepEqual(pt.precheck.turn, { udp: false }, JSON.stringify(pt.precheck));
      assert.match(await doctor.text('#lobby-list li .precheck'), /blocked/);
      await patient.waitFor({ css: '#precheck-advice', text: 'mobile data' });
      await doctor.close();
      await patient.close();
    });

    it('a call shows good on the doctor\'s tile, from both browsers\' reports', { timeout: TIMEOUT }, async () => {
      const server = await start({});
      const { visit, doctor, patient } = await meet(server);
      await doctor.click({ role: 'button', name: 'Admit Pat Lane' });
      await patient.waitFor('#screen-call');
      const tileQuality = (person) => person.attr('#tiles li[data-participant]', 'data-quality');
      await eventually('"good" on the doctor\'s tile for the patient', async () => (await tileQuality(doctor)) === 'good', { timeout: 30_000 });
      assert.match(await doctor.text('#tiles li[data-participant] .badge.quality'), /Connection good/);
      // Only doctors see others' quality; the patient sees none on the doctor's tile.
      assert.equal(await tileQuality(patient), '');
      assert.equal(await patient.count('#tiles .badge.quality'), 0);
      const summary = await server.api.quality(visit.id);
      assert.equal(summary.participants.length, 2, JSON.stringify(summary));
      for (const p of summary.participants) assert.ok(p.samples >= 1 && p.rtt_ms, JSON.stringify(p));
      await doctor.close();
      await patient.close();
    });

    it('a call shows good on the doctor\'s tile, and poor once the patient\'s network degrades', { timeout: 150_000 }, async (t) => {
      // As the issue specifies it: two Chromium peers (the namespace wrapper and the
      // insecure-origin flag are Chromium's here).
      if (engine !== 'chromium') return t.skip('the degraded call runs in Chromium');
      // The patient's browser runs in a network namespace of its own, so the test can make
      // their network lossy while the call runs (lib/netns.js).
      if (!(await netnsAvailable())) {
        assert.fail('this test needs root, ip and nft to give the patient a network of its own (CI runs as root)');
      }
      const ns = await new Netns().create();
      let patientBrowser;
      let doctorBrowser;
      try {
        const server = await start({ BEDSIDE_LISTEN: `${ns.hostAddress}:0` });
        const saved = process.env[engine === 'chromium' ? 'CHROMIUM_PATH' : 'FIREFOX_PATH'];
        const key = engine === 'chromium' ? 'CHROMIUM_PATH' : 'FIREFOX_PATH';
        process.env[key] = await ns.wrapper(saved ?? (engine === 'chromium' ? '/usr/bin/chromium' : '/usr/bin/firefox-esr'));
        try {
          patientBrowser = await launchBrowser(engine, { secureOrigin: server.url });
        } finally {
          if (saved === undefined) delete process.env[key];
          else process.env[key] = saved;
        }
        doctorBrowser = await launchBrowser(engine, { secureOrigin: server.url });
        const { visit, doctor, patient } = await meet(server, { doctorBrowser, patientBrowser });
        await doctor.click({ role: 'button', name: 'Admit Pat Lane' });
        await patient.waitFor('#screen-call');
        for (const person of [doctor, patient]) {
          await eventually('connectionState "connected"', async () => (await person.pcStates())[0] === 'connected', { timeout: 30_000 });
        }
        const tileQuality = () => doctor.attr('#tiles li[data-participant]', 'data-quality');
        await eventually('"good" on the doctor\'s tile for the patient', async () => (await tileQuality()) === 'good', { timeout: 20_000 });
        assert.match(await doctor.text('#tiles li[data-participant] .badge.quality'), /Connection good/);
        assert.ok(!(await patient.isVisible('#own-quality')), 'no weak-connection note while good');

        await ns.loseUdp(30);
        const degraded = Date.now();
        await eventually('"poor" on the doctor\'s tile', async () => (await tileQuality()) === 'poor', { timeout: 15_000, interval: 250 });
        t.diagnostic(`poor ${Date.now() - degraded} ms after the loss began`);
        assert.match(await doctor.text('#tiles li[data-participant] .badge.quality'), /Connection poor \(high packet loss\)/);
        await patient.waitFor({ css: '#own-quality', text: 'Your connection is weak' });

        const pt = (await server.api.quality(visit.id)).participants.find((p) => p.identity === 'pt-q');
        assert.equal(pt.worst_quality, 'poor', JSON.stringify(pt));
        assert.ok(pt.packet_loss.max >= 0.1, JSON.stringify(pt));
        await doctor.close();
        await patient.close();
      } finally {
        await patientBrowser?.close();
        await doctorBrowser?.close();
        await ns.destroy();
      }
    });
  });
}
