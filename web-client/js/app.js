// Entry point: reads the join link, runs the pre-call check, then connects and moves
// between the screens (waiting room, call, final) as the server's frames say. Doctors and
// patients run the same flow; the token's role decides what the call screen offers
// (waiting list, screen share, remove, end visit).

import { $, showScreen } from './dom.js';
import { openLocalMedia, stopStream } from './media.js';
import { Mesh } from './mesh.js';
import { Signaling } from './signaling.js';
import { readClaims, takeToken } from './token.js';
import { CallView } from './views/call.js';
import { showFinal } from './views/final.js';
import { LobbyView } from './views/lobby.js';
import { runPrecall } from './views/precall.js';
import { showConnectionStatus } from './views/status.js';

// Set once this tab has passed the pre-call check for a token: a reload (phones reload
// background tabs on their own) then goes straight back into the visit.
const CHECKED_KEY = 'bedside.checked';

const token = takeToken();
if (!token) {
  showScreen('screen-landing');
} else {
  const claims = readClaims(token);
  if (claims) run(token, claims);
  else showFinal({ outcome: 'link_invalid' });
}

async function run(token, claims) {
  const isDoctor = claims.role === 'doctor';
  const checked = Boolean(claims.jti) && sessionGet(CHECKED_KEY) === claims.jti;
  const stream = checked ? (await openLocalMedia()).stream : await runPrecall({ isDoctor });
  sessionSet(CHECKED_KEY, claims.jti);

  const signaling = new Signaling({ token });
  const mesh = new Mesh(signaling);
  const call = new CallView({ signaling, mesh, stream, isDoctor });
  let lobby = null;
  showConnectionStatus(signaling);

  const on = (type, handler) => signaling.addEventListener(type, (e) => handler(e.detail));
  on('joined', () => call.sendMedia());
  on('waiting', () => {
    // Also reached after a reconnect that came too late to keep our place.
    call.suspend();
    $('#waiting-video').srcObject = stream.getVideoTracks().length ? stream : null;
    showScreen('screen-waiting');
  });
  on('admitted', ({ participants }) => call.admitted(participants));
  on('lobby', ({ waiting }) => (lobby ??= new LobbyView(signaling)).update(waiting));
  on('participant_joined', ({ participant }) => call.joined(participant));
  on('participant_updated', ({ participant }) => call.updated(participant));
  on('participant_left', ({ participant_id, reason }) => call.left(participant_id, reason));
  on('signal', (frame) => mesh.receive(frame));
  on('chat', (frame) => call.chat.add(frame));
  on('visit_expiring', ({ expires_at }) => showExpiry(expires_at));
  on('error', ({ code }) => {
    if (code === 'invalid_chat') call.chat.note('Messages can be up to 2000 characters.');
    else if (code === 'not_admitted') call.chat.note('You can chat once the doctor lets you in.');
  });
  on('final', (detail) => {
    $('#expiry-notice').hidden = true;
    call.stop();
    lobby?.stop();
    stopStream(stream);
    showFinal(detail, { onRejoin: () => location.reload(), endedByMe: call.endedByMe });
  });

  $('#waiting-leave').addEventListener('click', () => signaling.leave());
  // No `leave` on pagehide: a reload (phones do it on their own) must find its place in
  // the visit again, which the server keeps for the grace period of a dropped connection.
  signaling.start();
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
  notice.hidden = false;
}
