// The connection status line in the header (an aria-live region), so everyone, including
// screen-reader users, knows whether they are connected, reconnecting, or offline.

import { $ } from '../dom.js';

export function showConnectionStatus(visit) {
  const line = $('#conn-status');
  const set = (state, text) => {
    line.dataset.state = state;
    if (line.textContent !== text) line.textContent = text;
  };
  visit.on('connection', (detail) => {
    switch (detail.state) {
      case 'connecting':
        return set('connecting', 'Connecting…');
      case 'connected':
        return set('connected', 'Connected');
      case 'reconnecting':
        if (!navigator.onLine) return set('offline', 'No network. Waiting for it to come back…');
        return set('reconnecting', detail.delayMs ? `Connection lost. Reconnecting in ${Math.ceil(detail.delayMs / 1000)} s…` : 'Reconnecting…');
    }
  });
  visit.on('ended', () => set('idle', ''));
}
