// The connection status line in the header, so everyone knows whether they are connected,
// reconnecting, or offline. The line itself is not a live region (it changes with every
// retry); losing the connection and getting it back are each announced once.
//
// One line, several connections: a provider's dashboard stays connected while a visit it
// took runs in the same tab. The line shows the connection shown last (the visit) and, once
// that one ends, the one before it again (the dashboard), as it stands then.

import { $, announce } from '../dom.js';

/** Sources whose status the line shows, the newest last. */
const shown = [];

export function showConnectionStatus(visit) {
  const line = $('#conn-status');
  const me = { state: 'idle', text: '' };
  shown.push(me);
  const render = () => {
    const top = shown.at(-1);
    if (!top) return;
    line.dataset.state = top.state;
    if (line.textContent !== top.text) line.textContent = top.text;
  };
  let lost = false;
  const set = (state, text) => {
    me.state = state;
    me.text = text;
    if (shown.at(-1) === me) render();
  };
  visit.on('connection', (detail) => {
    if (!shown.includes(me)) return;
    switch (detail.state) {
      case 'connecting':
        return set('connecting', 'Connecting…');
      case 'connected':
        if (lost) announce('Connected again.');
        lost = false;
        return set('connected', 'Connected');
      case 'reconnecting':
        // Only a connection we had can be lost (not a first attempt that failed): a visit
        // knows itself once joined, a provider's dashboard its provider.
        if (!lost && (visit.self ?? visit.provider)) {
          announce('Connection lost. Reconnecting…');
          lost = true;
        }
        if (!navigator.onLine) return set('offline', 'No network. Waiting for it to come back…');
        return set('reconnecting', detail.delayMs ? `Connection lost. Reconnecting in ${Math.ceil(detail.delayMs / 1000)} s…` : 'Reconnecting…');
    }
  });
  visit.on('ended', () => {
    set('idle', '');
    // Gone for good: the line goes back to whatever was shown before.
    const at = shown.indexOf(me);
    if (at >= 0 && shown.length > 1) {
      shown.splice(at, 1);
      render();
    }
  });
}
