// The chat panel: the visit's transcript (the server echoes our own messages back, so
// every participant sees the same order) and the box to write in.

import { $, h } from '../dom.js';

export class ChatView {
  #visit;
  #nameOf;

  /** @param nameOf (participantId) => display name */
  constructor(visit, nameOf) {
    this.#visit = visit;
    this.#nameOf = nameOf;
    visit.on('chat', (frame) => this.add(frame));
    const form = $('#chat-form');
    const input = $('#chat-input');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (this.#visit.chat(text)) {
        input.value = '';
        this.note('');
      } else {
        this.note('Not sent: the connection is down. It will be back in a moment; then press Send again.');
      }
    });
  }

  /** A `chat` frame. */
  add({ from, text, at }) {
    const log = $('#chat-log');
    const when = new Date(at);
    const time = Number.isNaN(when.getTime()) ? '' : when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    log.append(
      h(
        'li',
        { dataset: { from } },
        h('span', { class: 'from', text: `${this.#nameOf(from)}: ` }),
        h('span', { class: 'text', text }),
        time && h('time', { datetime: when.toISOString(), text: time }),
      ),
    );
    log.scrollTop = log.scrollHeight;
  }

  note(text) {
    const note = $('#chat-note');
    note.textContent = text;
    note.hidden = !text;
  }
}
