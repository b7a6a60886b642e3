// The patient's waiting room beyond "please wait": where they stand in their provider's
// queue, how long it will likely take, whether the provider is free, and the provider's
// messages; and before it, the consent the visit asks for. Each standing line is rewritten
// only when its words change, so the live region says what changed and nothing else.

import { $, alertText, announce, h, showScreen } from '../dom.js';

const CONSENT_ERRORS = {
  wrong_consent_version: 'The consent text has changed since this page showed it. Reload the page to read the current text.',
  consent_not_required: 'Your consent is not needed: you have already agreed, or this visit does not ask for it.',
};

/** Visits whose answers to `consent` are listened to already (askConsent runs per ask). */
const answered = new WeakSet();

const PRESENCE_TEXT = {
  available: 'is available',
  busy: 'is with another patient',
  away: 'is away at the moment',
};

/** Words for an expected wait in seconds (whole minutes from the server). */
export function waitText(seconds) {
  if (seconds === undefined || seconds === null) return null;
  const minutes = Math.ceil(seconds / 60);
  if (minutes <= 0) return 'Expected wait: you should be seen very soon.';
  if (minutes === 1) return 'Expected wait: about 1 minute.';
  if (minutes < 90) return `Expected wait: about ${minutes} minutes.`;
  const hours = Math.round(minutes / 30) / 2;
  return `Expected wait: about ${hours} hours.`;
}

/** A `waiting` frame: updates the lines whose words changed. */
export function showStanding({ position, expected_wait_secs, provider } = {}) {
  setLine('#waiting-position', position ? (position === 1 ? 'You are next in line.' : `You are number ${position} in line.`) : null);
  setLine('#waiting-eta', waitText(expected_wait_secs));
  const presence = PRESENCE_TEXT[provider?.presence];
  setLine('#waiting-provider', presence ? `${provider.name?.trim() || 'Your doctor'} ${presence}.` : null);
}

/** The standing lines shown now, in order (what the arrival announcement says). */
export function standingLines() {
  return ['#waiting-position', '#waiting-eta', '#waiting-provider']
    .map((selector) => $(selector))
    .filter((line) => line && !line.hidden && line.textContent)
    .map((line) => line.textContent);
}

function setLine(selector, text) {
  const line = $(selector);
  if (!line) return;
  if (text === null) {
    line.hidden = true;
    return;
  }
  if (line.textContent !== text) line.textContent = text;
  line.hidden = false;
}

/** A `provider_message`: kept in the waiting room's log, which reads it out. */
export function showProviderMessage({ text, at }) {
  const when = new Date(at);
  const time = Number.isNaN(when.getTime()) ? '' : when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  // The log itself is rendered from the start (empty), so its first message is read out;
  // only its heading waits for something to head.
  $('#provider-messages-title').hidden = false;
  $('#provider-messages').append(h('li', {}, time ? h('time', { datetime: at, text: time }) : null, text));
}

/**
 * `consent_required`: shows the text and its version. Accepting sends `consent`; declining
 * leaves without ever knocking (`onDecline` says so on the final screen).
 */
export function askConsent(visit, { version, text }, { onDecline }) {
  $('#consent-text').textContent = text;
  $('#consent-version').textContent = version;
  const accept = $('#consent-accept');
  const decline = $('#consent-decline');
  // Waits for the answer (`waiting`, or an `error`) so a second press sends nothing twice;
  // aria-disabled rather than disabled, so focus stays on the button.
  accept.removeAttribute('aria-disabled');
  if (!answered.has(visit)) {
    answered.add(visit);
    const settle = () => $('#consent-accept').removeAttribute('aria-disabled');
    visit.on('waiting', settle);
    visit.on('error', ({ code }) => {
      settle();
      if (CONSENT_ERRORS[code]) alertText(CONSENT_ERRORS[code]);
    });
  }
  accept.onclick = () => {
    if (accept.getAttribute('aria-disabled') === 'true') return;
    if (visit.consent(version)) accept.setAttribute('aria-disabled', 'true');
    else announce('Not connected. Try again in a moment.');
  };
  decline.onclick = () => {
    onDecline();
    visit.leave();
  };
  showScreen('screen-consent');
}
