// The chat panel: the visit's transcript (the server echoes our own messages back, so
// every participant sees the same order), the box to write in, and the count of messages
// that arrived while the chat sheet was closed.

import { $, alertText, h } from '../dom.js';

export class ChatView {
  #visit;
  #nameOf;
  #panels;
  #unread = 0;

  /**
   * @param visit the SDK's Visit
   * @param o.nameOf (participantId) => display name
   * @param o.panels where the chat is shown (for the unread count)
   */
  constructor(visit, { nameOf, panels }) {
    this.#visit = visit;
    this.#nameOf = nameOf;
    this.#panels = panels;
    visit.on('chat', (frame) => this.add(frame));
    panels.onChange(() => {
      if (panels.isVisible('chat')) this.#setUnread(0);
    });
    const input = $('#chat-input');
    $('#chat-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      if (this.#visit.chat(text)) {
        input.value = '';
        this.note('');
      } else {
        this.note('Not sent: the connection is down. It will be back in a moment; then press Send again.', { error: true });
      }
    });
  }

  /** A `chat` frame. */
  add({ from, text, at }) {
    const when = new Date(at);
    const time = Number.isNaN(when.getTime()) ? '' : when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    $('#chat-list').append(
      h(
        'li',
        { dataset: { from } },
        h('span', { class: 'from', text: `${this.#nameOf(from)}: ` }),
        h('span', { class: 'text', text }),
        time && h('time', { datetime: when.toISOString(), text: time }),
      ),
    );
    const log = $('#chat-log');
    log.scrollTop = log.scrollHeight;
    if (from !== this.#visit.self?.participant_id && !this.#panels.isVisible('chat')) this.#setUnread(this.#unread + 1);
  }

  /** A line under the message box; an error is also said at once. */
  note(text, { error = false } = {}) {
    const note = $('#chat-note');
    note.textContent = text;
    note.hidden = !text;
    if (error) alertText(text);
  }

  #setUnread(count) {
    this.#unread = count;
    this.#panels.setCount('chat', count, count === 1 ? '1 new message' : `${count} new messages`);
  }
}
