// The doctor's Invite button: asks for the guest's name, sends `invite`, and shows the link
// the server mints (`invite_link`) with a Copy button. The guest still waits to be let in.

import { $, alertText, announce, focusOn } from '../dom.js';

const ERRORS = {
  invalid_name: 'Enter a name of up to 100 characters.',
  forbidden: 'Only a doctor in the visit can invite someone.',
  visit_ended: 'The visit has ended.',
};

let current = null;

export class InviteView {
  #visit;
  /** The name asked for, until its link or a refusal comes; null when nothing is asked. */
  #pending = null;

  constructor(visit) {
    this.#visit = visit;
    current = this;
    wireDialog();
    const button = $('#btn-invite');
    button.hidden = false;
    button.addEventListener('click', () => this.open());
    visit.on('invite_link', (link) => this.#show(link));
    visit.on('error', ({ code }) => {
      if (this.#pending === null || !(code in ERRORS || code === 'invalid_role' || code === 'internal')) return;
      this.#pending = null;
      // Only a bad name is the name box's fault.
      this.#error(ERRORS[code] ?? 'The link could not be made. Try again.', { invalid: code === 'invalid_name' });
    });
    visit.on('ended', () => {
      const dialog = $('#invite-dialog');
      if (dialog.open) dialog.close();
    });
  }

  open() {
    const dialog = $('#invite-dialog');
    $('#invite-form').hidden = false;
    $('#invite-result').hidden = true;
    $('#invite-error').hidden = true;
    $('#invite-name').value = '';
    $('#invite-name').removeAttribute('aria-invalid');
    $('#invite-copied').textContent = '';
    if (!dialog.open) dialog.showModal();
    focusOn($('#invite-name'));
  }

  submit() {
    const name = $('#invite-name').value.trim();
    if (!name) return this.#error(ERRORS.invalid_name, { invalid: true });
    if (!this.#visit.invite(name)) return this.#error('Not connected. Try again in a moment.');
    this.#pending = name;
    $('#invite-error').hidden = true;
  }

  /** The dialog was closed: an answer still to come is for nobody. */
  cancel() {
    this.#pending = null;
  }

  #show({ join_url, expires_at, name }) {
    // Only the answer to what this dialog asked (an earlier request's link, answered after
    // a Cancel and a new name, is not shown under the new name).
    if (this.#pending === null || name?.trim() !== this.#pending) return;
    this.#pending = null;
    $('#invite-form').hidden = true;
    $('#invite-result').hidden = false;
    $('#invite-for').textContent = name;
    $('#invite-link').value = join_url;
    const until = new Date(expires_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    $('#invite-expiry').textContent = `Works until ${until}. Send it to ${name}; you let them in from the waiting room.`;
    focusOn($('#invite-copy'));
    announce(`Link for ${name} ready.`);
  }

  #error(text, { invalid = false } = {}) {
    const box = $('#invite-error');
    box.textContent = text;
    box.hidden = false;
    if (invalid) $('#invite-name').setAttribute('aria-invalid', 'true');
    else $('#invite-name').removeAttribute('aria-invalid');
    alertText(text);
    focusOn($('#invite-name'));
  }
}

let wired = false;

/** The dialog lives outside the call screen and outlives visits: wired once. */
function wireDialog() {
  if (wired) return;
  wired = true;
  const dialog = $('#invite-dialog');
  $('#invite-form').addEventListener('submit', (event) => {
    event.preventDefault();
    current?.submit();
  });
  $('#invite-cancel').addEventListener('click', () => dialog.close());
  $('#invite-done').addEventListener('click', () => dialog.close());
  $('#invite-copy').addEventListener('click', async () => {
    const link = $('#invite-link');
    let copied = false;
    try {
      await navigator.clipboard.writeText(link.value);
      copied = true;
    } catch {
      link.select();
      copied = document.execCommand?.('copy') ?? false;
    }
    $('#invite-copied').textContent = copied ? 'Link copied.' : 'Select the link and copy it.';
  });
  // Focus returns to the Invite button when the dialog closes.
  dialog.addEventListener('close', () => {
    current?.cancel();
    const button = $('#btn-invite');
    if (button && !button.hidden && !$('#screen-call').hidden) button.focus();
  });
}
