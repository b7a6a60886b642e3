// The final screen: what happened, in one sentence, when the visit is over for this page.

import { $, announce, showScreen } from '../dom.js';

const TEXT = {
  left: ['You left the visit', 'You can close this page.'],
  ended: ['The visit has ended', 'Thank you. You can close this page.'],
  not_found: ['This visit is not available', 'The visit has ended or the link is wrong. Contact your clinic if you need help.'],
  link_invalid: ['This link does not work', 'The link is not valid. Ask your clinic to send you a new one.'],
  link_expired: ['This link has expired', 'Ask your clinic to send you a new link.'],
  link_used: ['This link has already been used', 'Each of these links lets one person in once. Ask your clinic for a new one.'],
  revoked: ['This link is no longer valid', 'Ask the clinic for a new one.'],
  denied: ['You were not let in', 'The doctor did not admit you to this visit. Contact your clinic if you think this is a mistake.'],
  removed: ['You were removed from the visit', 'The doctor removed you from this visit. Contact your clinic if you need help.'],
  visit_full: ['This visit is full', 'The visit already has as many people as it allows. Contact your clinic.'],
  not_started: ['This visit has not started yet', 'Open the link again closer to the time of your appointment.'],
  replaced: ['The visit continues in another window', 'You opened this visit in another tab or device, so this page stopped.'],
  error: ['Something went wrong', 'Reload the page to try again.'],
  declined: ['You did not join the visit', 'You did not agree, so you were not put in the waiting room. Contact your clinic if you have questions.'],
};

const ENDED_BY = {
  ended_by_doctor: 'The doctor ended the visit.',
  ended_by_api: 'The clinic ended the visit.',
  expired: 'The time booked for this visit is over.',
};

/** Shows the final screen for the Visit's `ended` outcome. */
export function showFinal({ outcome, reason }, { onRejoin, endedByMe = false } = {}) {
  let [title, text] = TEXT[outcome] ?? TEXT.error;
  if (outcome === 'ended' && endedByMe) [title, text, reason] = ['You ended the visit', 'Everyone was disconnected. You can close this page.', undefined];
  $('#final-title').textContent = title;
  let detail = text;
  if (outcome === 'ended' && ENDED_BY[reason]) detail = `${ENDED_BY[reason]} ${text}`;
  // A doctor's own words when turning someone away (shown only to that person).
  if (outcome === 'denied' && reason) detail = `The doctor said: “${reason}” ${text}`;
  $('#final-text').textContent = detail;
  const rejoin = $('#final-rejoin');
  rejoin.hidden = !(onRejoin && (outcome === 'left' || outcome === 'replaced'));
  rejoin.onclick = onRejoin ?? null;
  document.title = `${title} · Bedside`;
  showScreen('screen-final');
  announce(`${title}. ${detail}`);
}
