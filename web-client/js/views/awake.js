// Keeping a phone's call going: the screen stays on during the call (Screen Wake Lock, where
// the browser offers it), and a page sent to the background (another app, the home screen)
// says so: the tab's title while it is away, a notice when it comes back, since browsers may
// pause its camera and sound meanwhile.

import { $, announce, focusOn } from '../dom.js';

const AWAY_TITLE = 'Call may pause · Bedside';

export function keepCallAwake(visit) {
  let lock = null;
  let awayFromCall = false;
  let title = document.title;
  const inCall = () => visit.state === 'admitted';

  const acquire = async () => {
    if (lock || !inCall() || document.visibilityState !== 'visible' || !navigator.wakeLock) return;
    try {
      lock = await navigator.wakeLock.request('screen');
      lock.addEventListener('release', () => (lock = null));
    } catch {
      // Refused (battery saver, a browser policy): the call works without it.
    }
  };
  const release = () => {
    lock?.release().catch(() => {});
    lock = null;
  };

  // The page's listeners go with the visit: a dashboard runs several visits in one page.
  const gone = new AbortController();
  visit.on('admitted', acquire);
  visit.on('waiting', release);
  visit.on('ended', () => {
    release();
    gone.abort();
  });

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') {
      if (!inCall()) return;
      awayFromCall = true;
      title = document.title;
      document.title = AWAY_TITLE;
      return;
    }
    // The browser lets go of the lock while the page is hidden: take it again.
    acquire();
    if (!awayFromCall) return;
    awayFromCall = false;
    if (document.title === AWAY_TITLE) document.title = title;
    if (!inCall()) return;
    $('#background-notice').hidden = false;
    announce('While this page was in the background, your camera or sound may have paused.');
  }, { signal: gone.signal });
  $('#background-dismiss').addEventListener('click', () => {
    $('#background-notice').hidden = true;
    focusOn($('#call-title'));
  }, { signal: gone.signal });
}
