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

/**
 * Visible text on the page whose contrast with what is behind it is below WCAG 2.1 AA
 * (4.5:1, or 3:1 for large text: 24 px, or 18.66 px bold). The background is the first
 * opaque one up the tree, with translucent layers blended over it; text over video or an
 * image is skipped (its background is the picture). Returns `[{text, ratio, need}]`.
 */
export function contrastProblems(page) {
  return page.evaluate(() => {
    const parse = (c) => {
      const m = c.match(/rgba?\(([^)]+)\)/);
      if (!m) return null;
      const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return { r, g, b, a };
    };
    const over = (top, below) => ({
      r: top.r * top.a + below.r * (1 - top.a),
      g: top.g * top.a + below.g * (1 - top.a),
      b: top.b * top.a + below.b * (1 - top.a),
      a: 1,
    });
    const luminance = ({ r, g, b }) => {
      const lin = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    /** The colour behind `el`, or null when it is a picture. */
    const background = (el) => {
      const layers = [];
      for (let n = el; n; n = n.parentElement) {
        const s = getComputedStyle(n);
        if (s.backgroundImage !== 'none') return null;
        if (n.querySelector(':scope > video, :scope > img, :scope > canvas') && n !== el) return null;
        const c = parse(s.backgroundColor);
        if (c && c.a > 0) {
          layers.push(c);
          if (c.a >= 1) break;
        }
      }
      let base = { r: 255, g: 255, b: 255, a: 1 };
      for (const layer of layers.reverse()) base = over(layer, base);
      return base;
    };
    const problems = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const el = t.parentElement;
      if (!el || seen.has(el) || !t.textContent.trim()) continue;
      seen.add(el);
      const rect = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      if (rect.width === 0 || rect.height === 0 || s.visibility === 'hidden' || Number(s.opacity) === 0) continue;
      const bg = background(el);
      const fg = parse(s.color);
      if (!bg || !fg) continue;
      const colour = over(fg, bg);
      const [hi, lo] = [luminance(colour), luminance(bg)].sort((a, b) => b - a);
      const ratio = (hi + 0.05) / (lo + 0.05);
      const size = parseFloat(s.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
      const need = large ? 3 : 4.5;
      if (ratio < need) problems.push({ text: t.textContent.trim().slice(0, 40), ratio: Math.round(ratio * 100) / 100, need });
    }
    return problems;
  });
}
