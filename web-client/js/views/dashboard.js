// The provider's dashboard (the page a provider token's link opens): their queue across
// visits (name, place, time waited, consent, the pre-call check), their status as waiting
// patients see it, a message box per patient and one for everyone, and "See patient":
// `take` gives a doctor token, and the visit runs in this same tab while the dashboard's
// socket stays open; after the visit (or "Back to queue") the queue is back.
//
// Rows are kept per participant and updated in place, so a keyboard user's focus stays on
// the same patient while others arrive; when the focused patient leaves the queue, focus
// moves to the next patient's "See patient", or to the queue's heading.

import { Dashboard } from '../../sdk/index.js';
import { $, alertText, announce, focusOn, h, showScreen } from '../dom.js';
import { displayName, formatWait } from './lobby.js';
import { precheckLine } from './quality.js';
import { showConnectionStatus } from './status.js';
import { showFinal } from './final.js';

const SHOWN = {
  available: 'Waiting patients see you as available.',
  busy: 'Waiting patients see you as busy.',
  away: 'Waiting patients see you as away.',
};

/** How long the presence radios rest on a choice before it is sent. */
const PRESENCE_SETTLE_MS = 400;

/** How long "See patient" waits for the answer to its `take` before it works again. */
const TAKE_TIMEOUT_MS = 15_000;

const LIST = new Intl.ListFormat('en', { style: 'long', type: 'conjunction' });

const TAKE_ERRORS = {
  not_your_visit: 'That patient is now in another provider’s queue.',
  visit_ended: 'That visit has ended.',
  visit_not_found: 'That visit is not available.',
  invalid_text: 'Messages can be 1 to 1000 characters.',
};

/**
 * Runs the dashboard for a provider `token`. `startVisit(token, {onEnded})` joins a visit
 * as its doctor in this tab and calls `onEnded(detail)` when this page is out of it.
 */
export function runDashboard(token, { startVisit }) {
  const board = new Dashboard({ token });
  const queue = new QueueView(board, { onSee: (visitId) => see(visitId) });
  let inVisit = false;
  let replaced = null;

  showConnectionStatus(board);
  showScreen('screen-dashboard');
  document.title = 'Your waiting patients · Bedside';

  board.on('joined', ({ name }) => {
    $('#dashboard-who').textContent = name ? `Signed in as ${name}.` : '';
  });
  board.on('queue', (frame) => {
    queue.update(frame.entries ?? []);
    showPresence(frame);
  });
  board.on('visit_token', ({ token: doctorToken }) => {
    if (inVisit) return;
    inVisit = true;
    queue.settle();
    startVisit(doctorToken, {
      onEnded: (detail) => {
        inVisit = false;
        if (replaced) return showFinal(replaced);
        showScreen('screen-dashboard', { focus: $('#queue-title') });
        document.title = 'Your waiting patients · Bedside';
        announce(detail.outcome === 'left' ? 'Back to your queue.' : 'The visit is over. Back to your queue.');
      },
    });
  });
  // Connected (again): whatever `take` was under way when the connection went got no answer.
  board.on('connection', ({ state }) => {
    if (state === 'connected' && !inVisit) queue.settle();
  });
  board.on('error', ({ code }) => {
    queue.settle();
    if (TAKE_ERRORS[code]) alertText(TAKE_ERRORS[code]);
  });
  board.on('ended', (detail) => {
    queue.stop();
    // Another tab took the dashboard over: a visit under way here carries on.
    if (inVisit) replaced = detail;
    else showFinal(detail);
  });

  // Arrow keys move the choice one radio at a time: the status is sent once the choice
  // rests, not once per radio passed over.
  let presenceTimer;
  for (const radio of document.querySelectorAll('input[name="presence"]')) {
    radio.addEventListener('change', () => {
      if (!radio.checked) return;
      clearTimeout(presenceTimer);
      const chosen = radio.value;
      presencePending = true;
      presenceTimer = setTimeout(() => {
        presencePending = false;
        if (board.setPresence(chosen)) announce(`Status set to ${chosen}.`);
        else alertText('Not connected. Try again in a moment.');
      }, PRESENCE_SETTLE_MS);
    });
  }
  $('#notify-all').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('#notify-all-text');
    const text = input.value.trim();
    if (!text) return;
    if (board.notify(text)) {
      input.value = '';
      announce('Message sent to everyone waiting.');
    } else {
      alertText('Not connected. Try again in a moment.');
    }
  });

  function see(visitId) {
    if (inVisit) return false;
    return board.take(visitId);
  }

  board.join();
  return board;
}

/** A choice the provider is still making (not sent yet): the radios are theirs meanwhile. */
let presencePending = false;

function showPresence({ presence, chosen }) {
  if (!presencePending) {
    for (const radio of document.querySelectorAll('input[name="presence"]')) radio.checked = radio.value === chosen;
  }
  const shown = presence ?? chosen;
  const line = $('#presence-shown');
  const text = SHOWN[shown] ?? '';
  const why = shown === 'busy' && chosen !== 'busy' ? ' (you are in a visit)' : '';
  if (line.textContent !== text + why) line.textContent = text + why;
}

class QueueView {
  #board;
  #onSee;
  #rows = new Map();
  #timer;
  #settleTimer;

  constructor(board, { onSee }) {
    this.#board = board;
    this.#onSee = onSee;
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  update(entries) {
    const list = $('#queue-list');
    const focusedRow = document.activeElement?.closest?.('#queue-list > li');
    const focusedIndex = focusedRow ? [...list.children].indexOf(focusedRow) : -1;
    const ids = new Set(entries.map((e) => e.participant.participant_id));
    for (const [id, row] of this.#rows) {
      if (ids.has(id)) continue;
      row.li.remove();
      this.#rows.delete(id);
    }
    entries.forEach((entry, i) => {
      const id = entry.participant.participant_id;
      let row = this.#rows.get(id);
      if (!row) {
        row = this.#row(entry);
        this.#rows.set(id, row);
        const next = entries.slice(i + 1).map((e) => this.#rows.get(e.participant.participant_id)).find((r) => r?.li.isConnected);
        list.insertBefore(row.li, next?.li ?? null);
        // Not said over a call the provider is in: the queue is there when they come back.
        if (!$('#screen-dashboard').hidden) announce(`${displayName(entry.participant)} is waiting.`);
      }
      this.#fill(row, entry);
    });
    if (focusedRow && !focusedRow.isConnected) {
      const next = list.children[Math.min(focusedIndex, list.children.length - 1)];
      focusOn(next?.querySelector('button.see') ?? $('#queue-title'));
    }
    this.#labelMessageBoxes();
    $('#queue-empty').hidden = entries.length > 0;
    $('#queue-title').textContent = entries.length ? `Queue (${entries.length})` : 'Queue';
    this.#tick();
  }

  #row(entry) {
    const id = entry.participant.participant_id;
    const inputId = `message-${id}`;
    const row = {
      visitId: entry.visit_id,
      li: h('li', { dataset: { participant: id } }),
      position: h('span', { class: 'position' }),
      name: h('span', { class: 'name' }),
      since: h('span', { class: 'since' }),
      consent: h('span', { class: 'consent' }),
      precheck: h('span', { class: 'precheck-slot' }),
      see: h('button', { type: 'button', class: 'primary see', text: 'See patient' }),
      label: h('label', { for: inputId }),
      input: h('input', { id: inputId, type: 'text', maxlength: '1000', autocomplete: 'off' }),
      send: h('button', { type: 'submit', text: 'Send' }),
    };
    const form = h('form', { class: 'message-form' }, row.label, h('div', { class: 'message-row' }, row.input, row.send));
    row.form = form;
    row.names = '';
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = row.input.value.trim();
      if (!text) return;
      if (this.#board.notify(text, row.visitId)) {
        row.input.value = '';
        announce(`Message sent to ${row.names}.`);
      } else {
        alertText('Not connected. Try again in a moment.');
      }
    });
    row.see.addEventListener('click', () => {
      if (row.see.getAttribute('aria-disabled') === 'true') return;
      if (this.#onSee(row.visitId)) {
        row.see.setAttribute('aria-disabled', 'true');
        // A `take` lost with the connection gets no answer: the buttons work again after a
        // while (a reconnect settles them sooner).
        clearTimeout(this.#settleTimer);
        this.#settleTimer = setTimeout(() => this.settle(), TAKE_TIMEOUT_MS);
      } else {
        alertText('Not connected, or already in a visit. Try again in a moment.');
      }
    });
    row.li.append(
      h('div', { class: 'who' }, row.position, ' ', row.name, row.since, row.consent, row.precheck),
      row.see,
      form,
    );
    return row;
  }

  #fill(row, entry) {
    const name = displayName(entry.participant);
    row.visitId = entry.visit_id;
    row.position.textContent = `${entry.position}.`;
    row.name.textContent = name;
    row.li.dataset.since = entry.participant.since;
    row.li.dataset.visit = entry.visit_id;
    if (entry.consent) {
      row.consent.textContent = `✓ Consent given (version ${entry.consent.version})`;
      row.consent.className = 'consent given';
    } else {
      row.consent.textContent = '';
      row.consent.className = 'consent';
    }
    const precheck = precheckLine(entry.precheck);
    row.precheck.replaceChildren(...(precheck ? [precheck] : []));
    row.see.setAttribute('aria-label', `See patient ${name}`);
  }

  /**
   * A message goes to a visit (`notify {visit_id}`), so to everyone waiting in it: one box
   * per visit, on its first row, named after all of them; the visit's other rows have none.
   */
  #labelMessageBoxes() {
    const byVisit = new Map();
    for (const li of $('#queue-list').children) {
      const row = this.#rows.get(li.dataset.participant);
      if (!row) continue;
      if (!byVisit.has(row.visitId)) byVisit.set(row.visitId, []);
      byVisit.get(row.visitId).push(row);
    }
    for (const rows of byVisit.values()) {
      const names = LIST.format(rows.map((r) => r.name.textContent));
      rows.forEach((r, i) => {
        r.form.hidden = i > 0;
        r.names = names;
      });
      const [first] = rows;
      const text = rows.length > 1 ? `Message to ${names} (everyone waiting in this visit)` : `Message to ${names}`;
      if (first.label.textContent !== text) first.label.textContent = text;
      first.send.setAttribute('aria-label', `Send message to ${names}`);
    }
  }

  /** The answer to a `take` came (a token or a refusal): the buttons work again. */
  settle() {
    clearTimeout(this.#settleTimer);
    for (const row of this.#rows.values()) row.see.removeAttribute('aria-disabled');
  }

  #tick() {
    const now = Date.now();
    for (const row of this.#rows.values()) {
      const seconds = Math.max(0, Math.floor((now - Date.parse(row.li.dataset.since)) / 1000));
      row.since.textContent = `waiting ${formatWait(seconds)}`;
    }
  }

  stop() {
    clearInterval(this.#timer);
    clearTimeout(this.#settleTimer);
  }
}
