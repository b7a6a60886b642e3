// Entry point: reads the join link, runs the pre-call check, then joins the visit through
// the SDK (../sdk/) and moves between the screens (consent, waiting room, call, final) as
// its events say. Doctors and patients run the same flow; the token's role decides what the
// call screen offers (waiting list, invite, screen share, remove, end visit). A provider
// token opens the provider's dashboard instead, which joins visits in this same tab.

import { Visit, openLocalMedia, readClaims, stopStream, takeToken } from '../sdk/index.js';
import { $, announce, showScreen, trackInputKind } from './dom.js';
import { reportToEmbedder } from './embed.js';
import { keepCallAwake } from './views/awake.js';
import { CallView } from './views/call.js';
import { runDashboard } from './views/dashboard.js';
import { showFinal } from './views/final.js';
import { InviteView } from './views/invite.js';
import { LobbyView } from './views/lobby.js';
import { runPrecall } from './views/precall.js';
import { showPrecheck } from './views/quality.js';
import { showConnectionStatus } from './views/status.js';
import { askConsent, showProviderMessage, showStanding, standingLines } from './views/waiting.js';

// Set once this tab has passed the pre-call check for a token: a reload (phones reload
// background tabs on their own) then goes straight back into the visit.
const CHECKED_KEY = 'bedside.checked';

// The call screen as the page was loaded, for each visit the dashboard opens: a fresh copy
// carries no listener of the visit before.
const pristineCall = $('#screen-call').cloneNode(true);
const pristineEnd = $('#end-dialog').cloneNode(true);
let calls = 0;

trackInputKind();
const token = takeToken();
if (!token) {
  showScreen('screen-landing');
} else {
  const claims = readClaims(token);
  if (!claims) showFinal({ outcome: 'link_invalid' });
  else if (claims.role === 'provider') runDashboard(token, { startVisit: (t, o) => fromDashboard(t, o) });
  else run(token, claims);
}

async function run(token, claims) {
  const isDoctor = claims.role === 'doctor';
  const checked = Boolean(claims.jti) && sessionGet(CHECKED_KEY) === claims.jti;
  const stream = checked ? (await openLocalMedia()).stream : await runPrecall({ isDoctor });
  sessionSet(CHECKED_KEY, claims.jti);
  let declined = false;
  const { visit, call } = startVisit(token, {
    isDoctor,
    stream,
    onDecline: () => (declined = true),
    onEnded: (detail) => {
      stopStream(stream);
      if (declined) showFinal({ outcome: 'declined' });
      else showFinal(detail, { onRejoin: () => location.reload(), endedByMe: call.endedByMe });
    },
  });
  showConnectionStatus(visit);
  $('#waiting-leave').addEventListener('click', () => visit.leave());
}

/** A visit the provider's dashboard took: camera on for it, back to the queue after. */
async function fromDashboard(token, { onEnded }) {
  const { stream } = await openLocalMedia();
  const { visit } = startVisit(token, {
    isDoctor: true,
    stream,
    backToQueue: true,
    onEnded: (detail) => {
      stopStream(stream);
      onEnded(detail);
    },
  });
  // The header says how the visit's connection stands while it runs, then the dashboard's.
  showConnectionStatus(visit);
}

function startVisit(token, { isDoctor, stream, backToQueue = false, onDecline = () => {}, onEnded }) {
  // A second visit in this tab gets a call screen of its own.
  if (calls++ > 0) {
    $('#screen-call').replaceWith(pristineCall.cloneNode(true));
    $('#end-dialog').replaceWith(pristineEnd.cloneNode(true));
  }
  const visit = new Visit({ token, stream });
  const call = new CallView({ visit, isDoctor, backToQueue });
  if (isDoctor) new InviteView(visit);
  let lobby = null;
  keepCallAwake(visit);
  reportToEmbedder(visit);

  visit.on('consent_required', (frame) => askConsent(visit, frame, { onDecline }));
  visit.on('waiting', (frame) => {
    showStanding(frame);
    // Said once on arrival (later `waiting` frames only update the place in the queue); also
    // reached after a reconnect that came too late to keep our place in the call.
    if (!$('#screen-waiting').hidden) return;
    $('#waiting-video').srcObject = stream.getVideoTracks().length ? stream : null;
    showScreen('screen-waiting');
    // The standing lines were filled while the screen was hidden, which nobody hears: the
    // arrival says them.
    announce(['You are in the waiting room. Your doctor will let you in shortly.', ...standingLines()].join(' '));
  });
  visit.on('provider_message', (frame) => showProviderMessage(frame));
  visit.on('precheck', (result) => showPrecheck(result));
  visit.on('lobby', ({ waiting }) => (lobby ??= new LobbyView(visit, { panels: call.panels })).update(waiting));
  visit.on('visit_expiring', ({ expires_at }) => showExpiry(expires_at));
  visit.on('error', ({ code }) => {
    if (code === 'invalid_chat') call.chat.note('Messages can be up to 2000 characters.', { error: true });
    else if (code === 'not_admitted') call.chat.note('You can chat once the doctor lets you in.', { error: true });
  });
  visit.on('ended', (detail) => {
    $('#expiry-notice').hidden = true;
    $('#end-dialog').close();
    lobby?.stop();
    call.dispose();
    onEnded(detail);
  });
  // No `leave` on pagehide: a reload (phones do it on their own) must find its place in
  // the visit again, which the server keeps for the grace period of a dropped connection.
  visit.join();
  return { visit, call };
}

function sessionGet(key) {
  try {
    return sessionStorage.getItem(key);
  } catch {
    return null;
  }
}

function sessionSet(key, value) {
  try {
    sessionStorage.setItem(key, value);
  } catch {
    // Storage disabled: a reload shows the pre-call check again, which is fine.
  }
}

/** Tells everyone when the visit will end by itself (the server warns a few minutes ahead). */
function showExpiry(expiresAt) {
  const notice = $('#expiry-notice');
  const at = new Date(expiresAt);
  const time = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  notice.textContent = `This visit ends at ${time}.`;
  if (notice.hidden) announce(notice.textContent);
  notice.hidden = false;
}
