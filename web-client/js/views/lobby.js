// The doctor's waiting list: who is waiting, for how long, with Admit and Deny buttons.
// It re-renders from each `lobby` frame (the server sends the whole list on every change)
// and ticks the waited times once a second.

import { $, announce, h } from '../dom.js';

export class LobbyView {
  #visit;
  #entries = [];
  #known = new Set();
  #timer = 0;

  constructor(visit) {
    this.#visit = visit;
    $('#lobby').hidden = false;
    this.#timer = setInterval(() => this.#tick(), 1000);
  }

  /** A `lobby` frame: the complete waiting list. */
  update(waiting) {
    const list = $('#lobby-list');
    const focusedId = document.activeElement?.closest?.('#lobby-list li')?.dataset.participant;
    this.#entries = waiting;
    for (const entry of waiting) {
      if (!this.#known.has(entry.participant_id)) announce(`${displayName(entry)} is waiting to be let in.`);
    }
    this.#known = new Set(waiting.map((e) => e.participant_id));
    list.replaceChildren(...waiting.map((entry) => this.#row(entry)));
    $('#lobby-empty').hidden = waiting.length > 0;
    $('#lobby-title').textContent = waiting.length ? `Waiting room (${waiting.length})` : 'Waiting room';
    // Keep keyboard users in the list when the row they were on disappears.
    if (focusedId && !this.#known.has(focusedId)) (list.querySelector('button') ?? $('#lobby-title')).focus();
    this.#tick();
  }

  #row(entry) {
    const name = displayName(entry);
    const status = entry.connected === false ? ' (connection lost)' : '';
    return h(
      'li',
      { dataset: { participant: entry.participant_id, since: entry.since } },
      h('span', { class: 'who' }, h('span', { class: 'name', text: name + status }), h('span', { class: 'since' })),
      h('button', {
        type: 'button',
        class: 'primary',
        text: 'Admit',
        'aria-label': `Admit ${name}`,
        onclick: (e) => this.#act(e.currentTarget, () => this.#visit.admit(entry.participant_id)),
      }),
      h('button', {
        type: 'button',
        text: 'Deny',
        'aria-label': `Deny ${name}`,
        onclick: (e) => this.#act(e.currentTarget, () => this.#visit.deny(entry.participant_id)),
      }),
    );
  }

  #act(button, send) {
    if (send()) {
      // The next `lobby` frame removes the row; until then, no double clicks.
      for (const b of button.parentElement.querySelectorAll('button')) b.disabled = true;
    } else {
      announce('Not connected. Try again in a moment.');
    }
  }

  #tick() {
    const now = Date.now();
    for (const li of document.querySelectorAll('#lobby-list li')) {
      const seconds = Math.max(0, Math.floor((now - Date.parse(li.dataset.since)) / 1000));
      li.querySelector('.since').textContent = `waiting ${formatWait(seconds)}`;
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
