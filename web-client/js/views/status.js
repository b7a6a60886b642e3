// The connection status line in the header, so everyone knows whether they are connected,
// reconnecting, or offline. The line itself is not a live region (it changes with every
// retry); losing the connection and getting it back are each announced once.

import { $, announce } from '../dom.js';

export function showConnectionStatus(visit) {
  const line = $('#conn-status');
  let lost = false;
  const set = (state, text) => {
    line.dataset.state = state;
    if (line.textContent !== text) line.textContent = text;
  };
  visit.on('connection', (detail) => {
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
  visit.on('ended', () => set('idle', ''));
}
