// The doctor's waiting list: who is waiting, for how long, with Admit and Deny buttons.
// The server sends the whole list on every change; rows are kept per participant and
// updated in place, so a keyboard user's focus stays on the same person's button while
// others arrive. When the focused person leaves the list (admitted, denied, gone), focus
// moves to the next person's Admit button, or to the list's heading when no one is left.

import { $, alertText, announce, focusOn, h } from '../dom.js';
import { precheckLine } from './quality.js';

export class LobbyView {
  #visit;
  #panels;
  #rows = new Map();
  #timer = 0;

  constructor(visit, { panels }) {
    this.#visit = visit;
    this.#panels = panels;
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  /** A `lobby` frame: the complete waiting list. */
  update(waiting) {
    const list = $('#lobby-list');
    const focusedRow = document.activeElement?.closest?.('#lobby-list li');
    const focusedIndex = focusedRow ? [...list.children].indexOf(focusedRow) : -1;
    const ids = new Set(waiting.map((e) => e.participant_id));

    for (const [id, row] of this.#rows) {
      if (ids.has(id)) continue;
      row.li.remove();
      this.#rows.delete(id);
    }
    // Existing rows keep their place (moving a focused element would drop its focus); new
    // ones go in before the next row the list already has.
    waiting.forEach((entry, i) => {
      let row = this.#rows.get(entry.participant_id);
      if (!row) {
        row = this.#row(entry);
        this.#rows.set(entry.participant_id, row);
        const nextKnown = waiting.slice(i + 1).find((e) => this.#rows.has(e.participant_id) && this.#rows.get(e.participant_id).li.isConnected);
        list.insertBefore(row.li, nextKnown ? this.#rows.get(nextKnown.participant_id).li : null);
        announce(`${displayName(entry)} is waiting to be let in.`);
      }
      this.#fill(row, entry);
    });

    if (focusedRow && !focusedRow.isConnected) {
      const next = list.children[Math.min(focusedIndex, list.children.length - 1)];
      focusOn(next?.querySelector('button.admit') ?? $('#lobby-title'));
    }
    $('#lobby-empty').hidden = waiting.length > 0;
    $('#lobby-title').textContent = waiting.length ? `Waiting room (${waiting.length})` : 'Waiting room';
    this.#panels.setCount('lobby', waiting.length, waiting.length === 1 ? '1 person waiting' : `${waiting.length} people waiting`);
    this.#tick();
  }

  #row(entry) {
    const id = entry.participant_id;
    const row = {
      li: h('li', { dataset: { participant: id } }),
      name: h('span', { class: 'name' }),
      since: h('span', { class: 'since' }),
      precheck: h('span', { class: 'precheck-slot' }),
      admit: h('button', { type: 'button', class: 'primary admit', text: 'Admit' }),
      deny: h('button', { type: 'button', class: 'deny', text: 'Deny' }),
    };
    row.admit.addEventListener('click', () => this.#act(row, () => this.#visit.admit(id)));
    row.deny.addEventListener('click', () => this.#act(row, () => this.#visit.deny(id)));
    row.li.append(h('span', { class: 'who' }, row.name, row.since, row.precheck), row.admit, row.deny);
    return row;
  }

  #fill(row, entry) {
    const name = displayName(entry);
    row.name.textContent = name + (entry.connected === false ? ' (connection lost)' : '');
    row.li.dataset.since = entry.since;
    const precheck = precheckLine(entry.precheck);
    row.precheck.replaceChildren(...(precheck ? [precheck] : []));
    row.admit.setAttribute('aria-label', `Admit ${name}`);
    row.deny.setAttribute('aria-label', `Deny ${name}`);
  }

  #act(row, send) {
    if (row.admit.getAttribute('aria-disabled') === 'true') return;
    if (send()) {
      // The next `lobby` frame removes the row. Until then no second click; the buttons stay
      // focusable (a disabled button would drop the focus it has).
      for (const b of [row.admit, row.deny]) b.setAttribute('aria-disabled', 'true');
    } else {
      alertText('Not connected. Try again in a moment.');
    }
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
  }
}

export function formatWait(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${seconds % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function displayName(p) {
  if (p.name && p.name.trim()) return p.name.trim();
  return p.role === 'doctor' ? 'Doctor' : p.role === 'guest' ? 'Guest' : 'Patient';
}
