// Debian's Chromium, driven by playwright-core, set up like a person's browser with a
// camera and microphone (fake ones) who has allowed the site to use them.

import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');

const FLAGS = [
  // A synthetic camera (a moving test pattern) and microphone (a beep), and the
  // permission prompt answered "allow": getUserMedia works with no hardware and no human.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--headless',
  // Chromium's sandbox needs user namespaces, which CI containers running as root lack.
  '--no-sandbox',
  '--disable-gpu',
  // No update checks, field trials or other calls home: the tests run offline.
  '--disable-background-networking',
  // WebRTC leaves loopback addresses out of ICE gathering by default. On a machine whose
  // only interface is loopback (a sandbox, a network namespace) the two pages then have
  // no candidate at all and never connect; with this flag they pair on 127.0.0.1.
  '--allow-loopback-in-peer-connection',
];

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: FLAGS,
    timeout: 30_000,
  });
}

/**
 * A page in its own browser context (its own cookies, storage and permissions: a
 * separate person), instrumented for the test:
 * - every RTCPeerConnection the client creates is recorded, so the test can read
 *   `connectionState` and `getStats()` as the browser sees them;
 * - Content-Security-Policy violations are collected (there must be none);
 * - every request is checked to stay on the page's origin (no CDN, no outside call).
 */
export async function openPerson(browser, { viewport = { width: 1280, height: 800 }, init } = {}) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(() => {
    const pcs = [];
    const violations = [];
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        pcs.push(this);
      }
    };
    document.addEventListener('securitypolicyviolation', (e) => violations.push(`${e.violatedDirective} ${e.blockedURI}`));
    window.__test = { pcs, violations };
  });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = { offOrigin: [], consoleErrors: [], pageErrors: [], csp: [] };
  page.on('request', (req) => {
    const url = req.url();
    if (url.startsWith('data:') || url.startsWith('blob:')) return;
    const origin = new URL(page.url() === 'about:blank' ? url : page.url()).origin;
    if (new URL(url).origin !== origin) problems.offOrigin.push(url);
  });
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // Chromium reports each blocked resource or inline code as "Refused to ...".
    if (/Content Security Policy/i.test(msg.text())) problems.csp.push(msg.text());
    else problems.consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => problems.pageErrors.push(String(err)));
  return { context, page, problems };
}

export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Polls `fn` until it returns a truthy value, or fails after `timeout` ms saying `what`. */
export async function eventually(what, fn, { timeout = 15_000, interval = 200 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The page's live (not closed) peer connections' states. */
export function pcStates(page) {
  return page.evaluate(() => window.__test.pcs.filter((pc) => pc.connectionState !== 'closed').map((pc) => pc.connectionState));
}

/** Video frames decoded so far over the page's live peer connections (from getStats). */
export function framesDecoded(page) {
  return page.evaluate(async () => {
    let total = 0;
    for (const pc of window.__test.pcs) {
      if (pc.connectionState === 'closed') continue;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') total += r.framesDecoded ?? 0;
      });
    }
    return total;
  });
}

/** Whether the page's content fits its width (no sideways scrolling on a phone). */
export function fitsWidth(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
}
