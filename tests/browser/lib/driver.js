// Real browsers for the tests, one way to drive both: Debian's Chromium through
// playwright-core, Debian's Firefox ESR through puppeteer-core over WebDriver BiDi. Each is
// set up like a person's browser with a camera and microphone (fake ones) who allowed the
// site to use them.
//
// A test speaks to a `Person` (a page in its own browser context: its own storage, a
// separate person) in the same words whichever browser it is: find elements by role and
// accessible name (or CSS and text), click, type, press keys, read, evaluate, screenshot.
// Elements are found by code running in the page (findAll below), so both browsers are
// asked exactly the same thing.

import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');

/** The browsers the suites run in: BROWSERS=chromium,firefox (the default) or one of them. */
export const ENGINES = (process.env.BROWSERS ?? 'chromium,firefox').split(',').map((s) => s.trim()).filter(Boolean);

export const PHONE = { width: 360, height: 740, touch: true };
export const DESKTOP = { width: 1280, height: 800, touch: false };

const CHROMIUM_FLAGS = [
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
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // WebRTC leaves loopback addresses out of ICE gathering by default. On a machine whose
  // only interface is loopback (a sandbox, a network namespace) the two pages then have
  // no candidate at all and never connect; with this flag they pair on 127.0.0.1.
  '--allow-loopback-in-peer-connection',
];

const FIREFOX_PREFS = {
  // Fake camera and microphone, and no permission prompt.
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  // Several people share one browser and only one window can have focus; Firefox otherwise
  // holds back device lists (enumerateDevices) from a page without focus.
  'media.devices.unfocused.enabled': true,
  // Loopback candidates, not hidden behind mDNS names: the pages pair on 127.0.0.1.
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  // Play video with sound without a click, as Chromium's automation mode does.
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  // Offline: no update checks or telemetry.
  'app.update.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
  'browser.shell.checkDefaultBrowser': false,
};

/**
 * Starts a browser: 'chromium' (playwright-core) or 'firefox' (puppeteer-core, BiDi).
 * `cameras`: how many fake cameras Chromium offers (Firefox always has one); `secureOrigin`:
 * an http:// origin Chromium should treat as secure (cameras work there), for a server
 * that is not on loopback.
 */
export async function launchBrowser(engine = 'chromium', { cameras = 1, secureOrigin } = {}) {
  if (engine === 'chromium') {
    const args = CHROMIUM_FLAGS.map((flag) => (flag === '--use-fake-device-for-media-stream' && cameras > 1 ? `${flag}=device-count=${cameras}` : flag));
    if (secureOrigin) args.push(`--unsafely-treat-insecure-origin-as-secure=${secureOrigin}`);
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args, timeout: 30_000 });
    return new Browser(engine, browser);
  }
  if (engine === 'firefox') {
    const browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr',
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
      timeout: 60_000,
    });
    return new Browser(engine, browser);
  }
  throw new Error(`unknown browser ${engine}`);
}

class Browser {
  constructor(engine, raw) {
    this.engine = engine;
    this.raw = raw;
  }

  /** A new person: their own browser context, a page sized like `viewport` (PHONE, DESKTOP). */
  async person({ viewport = DESKTOP, init } = {}) {
    const { width, height, touch = false } = viewport;
    let context;
    let page;
    if (this.engine === 'chromium') {
      context = await this.raw.newContext({ viewport: { width, height }, hasTouch: touch, isMobile: touch });
      await context.addInitScript(instrument);
      if (init) await context.addInitScript(init);
      page = await context.newPage();
      page.setDefaultTimeout(15_000);
    } else {
      context = await this.raw.createBrowserContext();
      // A window each, not a tab: a background tab is hidden, and Firefox then defers
      // device enumeration and throttles the page, as it should for a tab nobody sees.
      page = await context.newPage({ type: 'window' });
      await page.setViewport({ width, height });
      await page.evaluateOnNewDocument(instrument);
      if (init) await page.evaluateOnNewDocument(init);
    }
    const person = new Person(this, context, page);
    // A new Firefox window takes the focus.
    if (this.engine === 'firefox') this.front = person;
    return person;
  }

  async close() {
    await this.raw.close().catch(() => {});
  }
}

/** Runs in every page before its own scripts: records peer connections and CSP violations. */
function instrument() {
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
  // Everything said through a live region, in order, to check what is announced and how often.
  // Only what changes in a region that is rendered, and was already rendered before the change
  // (as of the previous batch of mutations): a screen reader says nothing of changes inside a
  // hidden region, nor of a region shown together with its content.
  const spoken = [];
  let rendered = new WeakSet();
  const isRendered = (el) => (el.checkVisibility ? el.checkVisibility() : el.getClientRects().length > 0);
  // Observing the document itself catches everything, even before <html> is parsed. Showing
  // and hiding (attributes) are observed too, so the snapshot is taken as things appear.
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type !== 'childList') continue;
      const region = r.target.closest?.('[aria-live]');
      if (!region || region.getAttribute('aria-live') === 'off') continue;
      if (!rendered.has(region) || !isRendered(region)) continue;
      for (const node of r.addedNodes) {
        const text = (node.textContent ?? '').replace(/\s+/g, ' ').trim();
        if (text) spoken.push({ live: region.getAttribute('aria-live'), text });
      }
    }
    rendered = new WeakSet([...document.querySelectorAll('[aria-live]')].filter(isRendered));
  }).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['hidden', 'class', 'style', 'open'] });
  window.__test = { pcs, violations, spoken };
}

/**
 * Finds elements in the page: `{role, name?, exact?}` by role and accessible name (name
 * matches as a case-insensitive substring unless `exact`), or `{css, text?}`. Only visible
 * elements unless `hidden: true`. Runs inside the page.
 */
function findAll(q) {
  const norm = (s) => (s ?? '').replace(/\s+/g, ' ').trim();
  const visible = (el) => {
    if (!el.isConnected) return false;
    if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true })) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const nameOf = (el) => {
    const by = el.getAttribute('aria-labelledby');
    if (by) return norm(by.split(/\s+/).map((id) => document.getElementById(id)?.textContent ?? '').join(' '));
    const label = el.getAttribute('aria-label');
    if (label) return norm(label);
    if (el.labels?.length) return norm([...el.labels].map((l) => l.textContent).join(' '));
    if (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA') return norm(el.getAttribute('placeholder'));
    return norm(el.textContent);
  };
  const ROLES = {
    button: 'button, [role=button]',
    heading: 'h1, h2, h3, h4, h5, h6, [role=heading]',
    textbox: 'input:not([type]), input[type=text], input[type=search], textarea, [role=textbox]',
    dialog: 'dialog, [role=dialog]',
    link: 'a[href]',
    combobox: 'select',
    group: '[role=group], fieldset',
    log: '[role=log]',
  };
  let els;
  if (q.role) {
    const want = q.name === undefined ? undefined : q.exact ? q.name : q.name.toLowerCase();
    els = [...document.querySelectorAll(ROLES[q.role])].filter((el) => {
      if (want === undefined) return true;
      const name = nameOf(el);
      return q.exact ? name === want : name.toLowerCase().includes(want);
    });
  } else {
    els = [...document.querySelectorAll(q.css)].filter((el) => q.text === undefined || norm(el.textContent).includes(q.text));
  }
  if (q.enabled) els = els.filter((el) => !el.disabled);
  return q.hidden ? els : els.filter(visible);
}

/** What has focus: enough to say where a keyboard user is, and whether they can see it. */
function describeFocus() {
  const el = document.activeElement;
  if (!el || el === document.body) return { tag: 'body', name: '', visible: false };
  const r = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  const clipped = el.closest('.visually-hidden') !== null;
  const label = el.getAttribute('aria-label') || (el.labels?.[0]?.textContent ?? '') || el.textContent;
  return {
    tag: el.tagName.toLowerCase(),
    id: el.id,
    name: (label ?? '').replace(/\s+/g, ' ').trim(),
    ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
    visible: !clipped && r.width > 1 && r.height > 1 && style.visibility !== 'hidden' && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth,
  };
}

const toQuery = (q) => (typeof q === 'string' ? { css: q } : q);
const describe = (q) => (q.role ? `${q.role} "${q.name ?? ''}"` : `${q.css}${q.text ? ` with "${q.text}"` : ''}`);

/** How many of a page's requests a failed wait reports. */
const RECENT = 40;

export class Person {
  #browser;
  #recent = [];

  constructor(browser, context, page) {
    this.#browser = browser;
    this.engine = browser.engine;
    this.context = context;
    this.page = page;
    this.problems = { offOrigin: [], consoleErrors: [], pageErrors: [], csp: [] };
    // The page's last requests, for a wait that fails: whether the page was still waiting
    // on the server, and for what. Paths only (no query, no fragment: links carry tokens).
    const started = Date.now();
    const note = (what, req, extra = '') => {
      let path = req.url();
      try {
        path = new URL(path).pathname;
      } catch {}
      this.#recent.push(`+${Date.now() - started} ms ${what} ${req.method()} ${path}${extra}`);
      if (this.#recent.length > RECENT) this.#recent.shift();
    };
    page.on('requestfinished', (req) => note('done ', req));
    page.on('requestfailed', (req) => note('FAIL ', req, ` ${req.failure()?.errorText ?? ''}`));
    page.on('request', (req) => {
      note('start', req);
      const url = req.url();
      if (!/^https?:/.test(url)) return;
      const pageUrl = page.url();
      if (!/^https?:/.test(pageUrl)) return;
      if (new URL(url).origin !== new URL(pageUrl).origin) this.problems.offOrigin.push(url);
    });
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      if (/Content[- ]Security[- ]Policy/i.test(msg.text())) this.problems.csp.push(msg.text());
      else this.problems.consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => {
      // Firefox reports a refused WebSocket (the tests cut connections on purpose) as an
      // error of the page; it is the network's, like Chromium's console message for it.
      if (/establish a connection to the server at wss?:/.test(String(err))) this.problems.consoleErrors.push(String(err));
      else this.problems.pageErrors.push(String(err));
    });
  }

  async goto(url) {
    await this.page.goto(url);
  }

  url() {
    return this.page.url();
  }

  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }

  /** How many elements match `q` (visible ones, unless `q.hidden`). */
  async count(q) {
    return this.page.evaluate(`(${findAll})(${JSON.stringify(toQuery(q))}).length`);
  }

  async isVisible(q) {
    return (await this.count(q)) > 0;
  }

  /** Waits until `q` matches a visible element (or, with `state: 'gone'`, none). */
  async waitFor(q, { timeout = 15_000, state } = {}) {
    q = toQuery(q);
    state ??= q.state ?? 'visible';
    try {
      await eventually(`${describe(q)} to be ${state}`, async () => {
        const n = await this.count(q);
        return state === 'gone' ? n === 0 : n > 0;
      }, { timeout, interval: 100 });
    } catch (err) {
      const screen = await this.page.evaluate('document.querySelector("[id^=screen-]:not([hidden])")?.id ?? "none"').catch(() => '?');
      err.message += `\n${this.engine} page on screen ${screen}; its last requests:\n  ${this.#recent.join('\n  ') || '(none)'}`;
      throw err;
    }
  }

  /** The first visible element matching `q`, waited for. */
  async element(q, options) {
    q = toQuery(q);
    await this.waitFor(q, options);
    const handle = await this.page.evaluateHandle(`(${findAll})(${JSON.stringify(q)})[0]`);
    return handle.asElement();
  }

  /** Clicks the element once it is shown and enabled (as a person would wait to). */
  async click(q, options) {
    const el = await this.element({ ...toQuery(q), enabled: true }, options);
    await el.click();
  }

  /** Replaces the text of a text box (focus, select all, type). */
  async fill(q, text) {
    const el = await this.element(q);
    await el.evaluate((node) => {
      node.focus();
      node.select?.();
    });
    await this.#front();
    if (text) await this.page.keyboard.type(text);
    else await this.page.keyboard.press('Backspace');
  }

  /**
   * Keys go to the window that has focus. Chromium (through Playwright) gives every page
   * focus of its own; Firefox has one focused window, so the person typing is brought to
   * the front first (without it, Enter does not press a button and no focus ring is drawn).
   */
  async #front() {
    if (this.engine !== 'firefox' || this.#browser.front === this) return;
    await this.page.bringToFront();
    this.#browser.front = this;
  }

  /** A key, or a chord written like 'Shift+Tab'. */
  async press(key) {
    await this.#front();
    const parts = key.split('+');
    const main = parts.pop();
    for (const mod of parts) await this.page.keyboard.down(mod);
    await this.page.keyboard.press(main);
    for (const mod of parts.reverse()) await this.page.keyboard.up(mod);
  }

  async type(text) {
    await this.#front();
    await this.page.keyboard.type(text);
  }

  /** textContent of the first match (shown or not), waited for. */
  async text(q) {
    const el = await this.element({ ...toQuery(q), hidden: true });
    return el.evaluate((node) => node.textContent.replace(/\s+/g, ' ').trim());
  }

  /** An attribute of the first match (shown or not), waited for. */
  async attr(q, name) {
    const el = await this.element({ ...toQuery(q), hidden: true });
    return el.evaluate((node, n) => node.getAttribute(n), name);
  }

  /** What has focus now: {tag, id, name, ring (a focus outline is drawn), visible}. */
  async focused() {
    // Focus rings are drawn in the window that has focus (the person's own, in real life).
    await this.#front();
    return this.page.evaluate(describeFocus);
  }

  /** Everything the page said through its live regions so far: [{live, text}]. */
  spoken() {
    return this.page.evaluate(() => window.__test.spoken);
  }

  /** The page's live (not closed) peer connections' states. */
  pcStates() {
    return this.page.evaluate(() => window.__test.pcs.filter((pc) => pc.connectionState !== 'closed').map((pc) => pc.connectionState));
  }

  /** Video frames decoded so far, per live peer connection (from getStats). */
  framesPerPeer() {
    return this.page.evaluate(() =>
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
  }

  async framesDecoded() {
    return (await this.framesPerPeer()).reduce((a, b) => a + b, 0);
  }

  /** Whether the page's content fits its width (no sideways scrolling on a phone). */
  fitsWidth() {
    return this.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  }

  /** Whether the page scrolls at all (a call must not). */
  scrolls() {
    return this.page.evaluate(() => document.documentElement.scrollHeight > window.innerHeight + 1 || document.documentElement.scrollWidth > window.innerWidth + 1);
  }

  /** The element's box in the viewport, and whether all of it is inside the viewport. */
  box(css) {
    return this.page.evaluate((selector) => {
      const el = document.querySelector(selector);
      if (!el) return null;
      const r = el.getBoundingClientRect();
      return {
        top: Math.round(r.top),
        bottom: Math.round(r.bottom),
        left: Math.round(r.left),
        right: Math.round(r.right),
        inside: r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight + 0.5 && r.right <= innerWidth + 0.5,
      };
    }, css);
  }

  /** axe-core's WCAG 2.1 A and AA violations on the page as it is now. */
  async axe() {
    // Evaluated through the driver, not a <script> tag, so the page's CSP stays as strict.
    if (!(await this.page.evaluate(() => Boolean(window.axe)))) await this.page.evaluate(await axeSource());
    return this.page.evaluate(async () => {
      const result = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }, resultTypes: ['violations'] });
      return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
    });
  }

  async screenshot(name) {
    await mkdir(ARTIFACTS, { recursive: true });
    await this.page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
  }

  async close() {
    await this.context.close().catch(() => {});
  }
}

let axeCode;
async function axeSource() {
  axeCode ??= await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  return axeCode;
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
