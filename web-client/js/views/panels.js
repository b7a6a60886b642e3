// The call's panels: the chat and the doctor's waiting room. On a phone (and any narrow
// window) each is a sheet that its button in the controls bar opens over the lower part of
// the call, one at a time, with a count of what is new on the button; Escape or Close shuts
// it and puts focus back on its button. On a wide screen both stay open in a side panel.

import { $, focusOn } from '../dom.js';

const WIDE = '(min-width: 64rem)';

export class Panels {
  #open = null;
  #wide = matchMedia(WIDE);
  #enabled;
  #listeners = new Set();
  #onWidth = () => this.layout();

  constructor({ isDoctor }) {
    this.#enabled = { chat: true, lobby: isDoctor };
    $('#btn-lobby').hidden = !isDoctor;
    this.#wide.addEventListener('change', this.#onWidth);
    for (const name of ['chat', 'lobby']) {
      this.#toggle(name).addEventListener('click', () => (this.#open === name ? this.close() : this.open(name)));
    }
    for (const button of document.querySelectorAll('.sheet-close')) button.addEventListener('click', () => this.close());
    $('#panels').addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && this.#open && !this.wide) {
        event.preventDefault();
        this.close();
      }
    });
    this.layout();
  }

  /** Stops following the window's width (the visit is over; a new call screen may follow). */
  dispose() {
    this.#wide.removeEventListener('change', this.#onWidth);
    this.#listeners.clear();
  }

  /** Whether the side panel shows everything (no sheets). */
  get wide() {
    return this.#wide.matches;
  }

  /** Whether a person can see panel `name` now. */
  isVisible(name) {
    return this.#enabled[name] && (this.wide || this.#open === name);
  }

  /** Calls `listener()` whenever what is visible changes. */
  onChange(listener) {
    this.#listeners.add(listener);
  }

  /** Opens sheet `name` and focuses what one uses it for. */
  open(name) {
    if (!this.#enabled[name]) return;
    this.#open = name;
    this.layout();
    const target = name === 'chat' ? $('#chat-input') : ($('#lobby-list button:not([aria-disabled="true"])') ?? $('#lobby-title'));
    focusOn(target);
  }

  /** Closes the open sheet; focus goes back to its button. */
  close() {
    const name = this.#open;
    if (!name) return;
    this.#open = null;
    this.layout();
    if (!this.wide) this.#toggle(name).focus();
  }

  /** Shows and hides the panels for the current width (also after the screen turns). */
  layout() {
    for (const name of ['chat', 'lobby']) {
      $(`#${name}`).hidden = !this.isVisible(name);
      this.#toggle(name).setAttribute('aria-expanded', String(this.#open === name && !this.wide));
    }
    $('#panels').hidden = !this.wide && !this.#open;
    for (const listener of this.#listeners) listener();
  }

  /** The count on a panel's button (unread messages, people waiting); 0 hides it. */
  setCount(name, count, label) {
    const button = this.#toggle(name);
    const badge = button.querySelector('.count');
    badge.textContent = String(count);
    badge.hidden = count === 0;
    // The visible label starts the name (WCAG 2.5.3), the count follows in words.
    if (count) button.setAttribute('aria-label', `${button.querySelector('.label').textContent}: ${label}`);
    else button.removeAttribute('aria-label');
  }

  #toggle(name) {
    return $(name === 'chat' ? '#btn-chat' : '#btn-lobby');
  }
}
