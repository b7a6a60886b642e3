// Small DOM helpers shared by the views: building elements, switching screens with focus
// management, and announcing what happens to screen readers.

/** Creates an element. Text is always set as text, never parsed as HTML. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/**
 * Notes on <html data-input> whether the person last used the keyboard or a pointer:
 * headings that receive focus show a focus ring only for the keyboard (styles.css).
 */
export function trackInputKind() {
  const root = document.documentElement;
  document.addEventListener('keydown', (event) => {
    if (!['Shift', 'Control', 'Alt', 'Meta'].includes(event.key)) root.dataset.input = 'keyboard';
  }, true);
  document.addEventListener('pointerdown', () => (root.dataset.input = 'pointer'), true);
}

/**
 * Shows one screen (a `<section class="screen">`) and hides the others. Focus moves to
 * `focus` (default: the screen's heading), which is always something visible, so keyboard
 * and screen-reader users land on what changed and sighted keyboard users see where.
 */
export function showScreen(id, { focus } = {}) {
  const screen = document.getElementById(id);
  // Already showing: leave focus where the person has it.
  if (screen?.hidden === false) return;
  for (const other of document.querySelectorAll('.screen')) other.hidden = other.id !== id;
  // The call fills the viewport exactly; the other screens are ordinary pages.
  document.body.classList.toggle('in-call', id === 'screen-call');
  const target = focus ?? document.querySelector(`#${id} h1, #${id} h2`);
  if (target) focusOn(target);
}

/** Moves focus to `el`, making it focusable by script if it is not already. */
export function focusOn(el) {
  if (!el.matches('a[href], button, input, select, textarea, [tabindex]')) el.tabIndex = -1;
  el.focus({ preventScroll: false });
}

// How long an announcement stays in its region: long enough for any screen reader to pick
// it up; removing it afterwards keeps the region from growing (removals are not read).
const ANNOUNCEMENT_TTL_MS = 15_000;

/** Says `text` once, politely (what happens: arrivals, admission, connection). */
export function announce(text) {
  speak('announcer', text);
}

/** Says `text` at once, interrupting: errors only. */
export function alertText(text) {
  speak('alerter', text);
}

function speak(regionId, text) {
  const region = document.getElementById(regionId);
  if (!region || !text) return;
  // A new child per message: two messages in a row are both read, and a message that is
  // said again is read again.
  const line = h('p', { text });
  region.append(line);
  setTimeout(() => line.remove(), ANNOUNCEMENT_TTL_MS);
}
