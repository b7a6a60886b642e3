// What to do when the camera or microphone does not work, in steps for the browser the
// person is using: where each browser keeps a site's camera permission differs, and "check
// your settings" helps nobody.

/** The browser family, from the user agent (only to word the steps). */
export function browserOf(ua = globalThis.navigator?.userAgent ?? '') {
  const ios = /iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && /Mobile/.test(ua));
  const android = /Android/.test(ua);
  if (ios) return 'ios';
  if (/SamsungBrowser/.test(ua)) return 'samsung';
  if (/Firefox|FxiOS/.test(ua)) return android ? 'firefox-android' : 'firefox';
  if (/Edg\//.test(ua)) return 'edge';
  if (/Chrome|Chromium|CriOS/.test(ua)) return android ? 'chrome-android' : 'chrome';
  if (/Safari/.test(ua)) return 'safari';
  return 'other';
}

const ALLOW_STEPS = {
  'chrome-android': [
    'Tap the icon to the left of the web address (a lock or a settings symbol).',
    'Tap Permissions, then allow Camera and Microphone.',
    'Come back to this page and tap Try again.',
  ],
  samsung: ['Tap the lock icon to the left of the web address.', 'Tap Permissions, then allow Camera and Microphone.', 'Tap Try again.'],
  ios: [
    'Tap the aA icon in the address bar, then Website Settings.',
    'Set Camera and Microphone to Allow, then tap Done.',
    'Tap Try again. If they stay blocked: open the Settings app, then Safari, and set Camera and Microphone to Ask or Allow.',
  ],
  'firefox-android': ['Tap the lock icon to the left of the web address.', 'Allow Camera and Microphone.', 'Tap Try again.'],
  firefox: [
    'Click the crossed-out camera or microphone icon in the address bar.',
    'Clear the block (the × next to "Blocked temporarily" or "Blocked").',
    'Press Try again and choose Allow.',
  ],
  chrome: ['Click the icon to the left of the web address (a lock or a settings symbol).', 'Turn on Camera and Microphone.', 'Press Try again.'],
  edge: ['Click the lock icon to the left of the web address.', 'Under Permissions for this site, set Camera and Microphone to Allow.', 'Press Try again.'],
  safari: ['In the Safari menu, choose Settings for This Website.', 'Set Camera and Microphone to Allow.', 'Press Try again.'],
  other: ["Open your browser's settings for this site and allow the camera and microphone.", 'Press Try again.'],
};

const TOUCH = new Set(['chrome-android', 'samsung', 'ios', 'firefox-android']);

/** Steps (sentences) for a `classifyMediaError` case in browser `browser`. */
export function fixSteps(problem, browser = browserOf()) {
  const press = TOUCH.has(browser) ? 'Tap' : 'Press';
  switch (problem) {
    case 'denied':
      return ALLOW_STEPS[browser] ?? ALLOW_STEPS.other;
    case 'missing':
      return [
        'Check that the camera or microphone is connected and switched on; some laptops have a switch or a cover for the camera.',
        `${press} Try again.`,
      ];
    case 'busy':
      return [
        TOUCH.has(browser)
          ? 'Close other apps that may be using the camera (another video call, the camera app), then come back here.'
          : 'Close other programs or tabs that may be using the camera (another video call, the camera app).',
        `${press} Try again.`,
      ];
    case 'insecure':
      return ['Ask your clinic for the correct link: it starts with https://.'];
    default:
      return [`${press} Try again.`, 'If that does not help, close your browser, open it again and open your link once more.'];
  }
}
