// Call quality in words (docs/quality.md): the doctor's indicator on each tile, the note a
// participant gets about their own weak connection, the pre-call check in the waiting list
// and, when the network is blocked, what the patient can try. Always text (and an icon that
// is only decoration), never colour alone.

import { $, alertText, h } from '../dom.js';

const CLASS_TEXT = { good: 'Connection good', fair: 'Connection fair', poor: 'Connection poor' };
const CLASS_ICON = { good: '●●●', fair: '●●○', poor: '●○○' };
export const REASON_TEXT = {
  packet_loss: 'high packet loss',
  latency: 'long delay',
  jitter: 'uneven delivery (jitter)',
  bandwidth: 'low bandwidth',
  relay: 'relayed through TURN',
};

/** The indicator for a participant object's `quality`, or null before any report. */
export function qualityBadge(p) {
  if (!p.quality) return null;
  const reason = REASON_TEXT[p.quality_reason];
  const text = CLASS_TEXT[p.quality] ?? p.quality;
  // Focusable, so the reason shows on focus as on hover; read whole by screen readers.
  return h(
    'span',
    {
      class: `badge quality ${p.quality}`,
      dataset: { quality: p.quality },
      title: reason ? `${text}: ${reason}` : text,
      tabindex: '0',
    },
    h('span', { class: 'icon', 'aria-hidden': 'true', text: CLASS_ICON[p.quality] ?? '' }),
    ` ${text}`,
    reason ? h('span', { class: 'reason', text: ` (${reason})` }) : null,
  );
}

/** The participant's own note: shown while their connection is poor. */
export function showOwnQuality({ quality } = {}) {
  const note = $('#own-quality');
  if (!note) return;
  const poor = quality === 'poor';
  if (poor && note.hidden) alertText('Your connection is weak: try moving closer to your Wi-Fi.');
  note.hidden = !poor;
}

const NETWORK_TEXT = {
  direct: 'Network: direct connection',
  relay: 'Network: only through a relay',
  blocked: 'Network: blocked, the call may not connect',
};

/** The pre-call check in a waiting-list row, or null before it arrived. */
export function precheckLine(precheck) {
  if (!precheck) return null;
  const parts = [
    `${precheck.camera ? '✓' : '✗'} camera`,
    `${precheck.microphone ? '✓' : '✗'} microphone`,
  ];
  return h(
    'span',
    { class: `precheck ${precheck.network}`, dataset: { network: precheck.network } },
    `${parts.join(', ')}. ${NETWORK_TEXT[precheck.network] ?? precheck.network}.`,
  );
}

/** The waiting patient's own result: what to try when the network is blocked. */
export function showPrecheck(result) {
  const box = $('#precheck-advice');
  if (!box) return;
  box.hidden = result.network !== 'blocked';
  if (!box.hidden) alertText($('#precheck-advice').textContent);
}
