// The signaling connection: one WebSocket to Bedside's /ws that joins the visit, survives
// network blips, and reports why it ended for good. The Visit builds on it; it knows
// nothing of WebRTC or of what the frames mean beyond the join and the final close.
//
// Sockets come and go (every reconnect opens a new one); listeners attach to this object:
//   `frame`       every server frame but `pong`, parsed
//   `connection`  {state: 'connecting' | 'connected' | 'reconnecting', attempt, delayMs?}
//   `ended`       {outcome, code, reason?}  the visit is over for this page; no more retries
//
// A dropped socket is reopened with exponential backoff and sent `join` with the
// `resume_token` from the last `joined`, so an admitted participant keeps their place
// (Bedside holds it for a grace period) instead of going back to the waiting room.

import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { readClaims } from './token.js';

// How often we send an application-level ping. The server's own WebSocket pings are
// answered by the browser but invisible to us, so our ping/pong is how the page notices
// a connection that died silently (a phone switching networks, a sleeping laptop).
const PING_INTERVAL_MS = 10_000;
// Nothing heard for this long means the socket is dead, whatever its readyState says.
const SILENCE_LIMIT_MS = 25_000;
// A socket that has not reached `joined` in this time is abandoned and retried.
const JOIN_TIMEOUT_MS = 10_000;

/**
 * What a final close means for the person, from the close code and the frames that came
 * just before it (`denied`, `visit_ended`, or an `error` naming the refusal); null for a
 * close worth another try.
 */
export function finalOutcome(code, { error, denied, ended } = {}) {
  // The clinic took this link back (a removal or a denial blocks the identity): whatever
  // the close code, a new link from the clinic is the only way in.
  if (error === 'access_revoked') return { outcome: 'revoked' };
  switch (code) {
    case 1000:
      return { outcome: 'left' };
    case 4001:
      if (error === 'token_used') return { outcome: 'link_used' };
      return { outcome: error === 'token_expired' ? 'link_expired' : 'link_invalid' };
    case 4003:
      if (denied === 'removed') return { outcome: 'removed' };
      if (denied !== undefined) return { outcome: 'denied', reason: denied === 'denied' ? undefined : denied };
      if (error === 'visit_full') return { outcome: 'visit_full' };
      if (error === 'visit_not_started') return { outcome: 'not_started' };
      return { outcome: 'denied' };
    case 4004:
      if (ended) return { outcome: 'ended', reason: ended };
      if (error === 'visit_not_found') return { outcome: 'not_found' };
      return { outcome: 'ended' };
    case 4009:
      return { outcome: 'replaced' };
    case 1009:
      // A frame the server found too large: retrying would only repeat it.
      return { outcome: 'error' };
    default:
      return null; // 1001, 1006, 4008, ...: worth another try.
  }
}

// The resume token outlives a reload of the tab (sessionStorage, like the join token), so a
// reload takes the same place back instead of joining anew, which a single-use link refuses.
// It is kept only for the join token it came with.
const RESUME_KEY = 'bedside.resume';

function loadResume(token) {
  try {
    const saved = JSON.parse(globalThis.sessionStorage?.getItem(RESUME_KEY) ?? 'null');
    return saved && saved.token === token && typeof saved.resume === 'string' ? saved.resume : null;
  } catch {
    return null;
  }
}

function saveResume(token, resume) {
  try {
    if (typeof resume === 'string') globalThis.sessionStorage?.setItem(RESUME_KEY, JSON.stringify({ token, resume }));
    else globalThis.sessionStorage?.removeItem(RESUME_KEY);
  } catch {
    // Storage can be disabled (private modes): the resume token then lives in memory only.
  }
}

export function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * `url` naming the visit the token is for (`?visit=ID`): Bedside runs a visit's connections
 * on one thread when they say which visit they are for (docs/protocol.md, "Placement
 * hint"). A hint only, read from the token unverified; the URL is left as it is for a
 * token without a visit (a provider's) or a URL that cannot be parsed.
 */
export function withVisitHint(url, token) {
  const visit = readClaims(token)?.visit;
  if (typeof visit !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(visit)) return url;
  try {
    const parsed = new URL(url);
    parsed.searchParams.set('visit', visit);
    return parsed.toString();
  } catch {
    return url;
  }
}

export class Signaling extends Emitter {
  #url;
  #token;
  #resumeToken = null;
  #ws = null;
  #joined = false;
  #started = false;
  #attempt = 0;
  #retryTimer = 0;
  #pingTimer = 0;
  #joinTimer = 0;
  #lastHeard = 0;
  #final = false;
  #leaving = false;
  #online = () => this.#retryNow();
  // What the server said just before closing, to explain the close.
  #lastError;
  #denied;
  #ended;

  constructor({ token, url = defaultUrl() }) {
    super();
    this.#url = withVisitHint(url, token);
    this.#token = token;
    this.#resumeToken = loadResume(token);
    /** Our participant id, from the last `joined`. */
    this.participantId = null;
  }

  /** Whether frames can be sent now (the socket is open and the join went through). */
  get connected() {
    return this.#joined;
  }

  /** Whether the visit is over for this page (`ended` was emitted). */
  get ended() {
    return this.#final;
  }

  start() {
    if (this.#started) return;
    this.#started = true;
    globalThis.addEventListener?.('online', this.#online);
    this.#open();
  }

  /** Sends a frame; false if the socket is down (the caller decides whether that matters). */
  send(frame) {
    if (!this.#joined || this.#ws?.readyState !== WebSocket.OPEN) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Leaves for good; the server answers with close 1000. */
  leave() {
    if (this.#final) return;
    this.#leaving = true;
    if (!this.send({ type: 'leave' })) this.#finish({ outcome: 'left', code: 1000 });
  }

  #open() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = 0;
    this.#lastError = this.#denied = this.#ended = undefined;
    this.emit('connection', { state: this.#attempt === 0 && !this.participantId ? 'connecting' : 'reconnecting', attempt: this.#attempt });
    let ws;
    try {
      ws = new WebSocket(this.#url);
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    ws.addEventListener('open', () => {
      const join = { type: 'join', token: this.#token };
      // The resume token is tried first; the join token stays as the fallback in case
      // the resume token is no longer accepted.
      if (this.#resumeToken) join.resume_token = this.#resumeToken;
      ws.send(JSON.stringify(join));
    });
    ws.addEventListener('message', (event) => this.#onMessage(ws, event));
    ws.addEventListener('close', (event) => this.#onClose(ws, event.code));
    this.#joinTimer = setTimeout(() => this.#abandon(ws), JOIN_TIMEOUT_MS);
  }

  #onMessage(ws, event) {
    if (ws !== this.#ws) return;
    this.#lastHeard = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== 'string') return;
    switch (frame.type) {
      case 'joined':
        clearTimeout(this.#joinTimer);
        this.#joined = true;
        this.#attempt = 0;
        this.#resumeToken = frame.resume_token;
        saveResume(this.#token, frame.resume_token);
        this.participantId = frame.participant_id;
        this.#startHeartbeat(ws);
        this.emit('connection', { state: 'connected', attempt: 0 });
        break;
      case 'error':
        this.#lastError = frame.code;
        break;
      case 'denied':
        this.#denied = frame.reason;
        break;
      case 'visit_ended':
        this.#ended = frame.reason;
        break;
      case 'pong':
        return;
    }
    this.emit('frame', frame);
  }

  #onClose(ws, code) {
    if (ws !== this.#ws) return;
    this.#teardown();
    // Once we asked to leave, any close is the end: reconnecting would rejoin the visit.
    const final = this.#leaving ? { outcome: 'left' } : finalOutcome(code, { error: this.#lastError, denied: this.#denied, ended: this.#ended });
    if (final) this.#finish({ ...final, code });
    else this.#scheduleRetry();
  }

  /** Gives up on a socket that looks dead without waiting for its close handshake. */
  #abandon(ws) {
    if (ws !== this.#ws) return;
    this.#teardown();
    try {
      ws.close(4000, 'unresponsive');
    } catch {
      // Already closing.
    }
    this.#scheduleRetry();
  }

  #teardown() {
    clearTimeout(this.#joinTimer);
    clearInterval(this.#pingTimer);
    this.#ws = null;
    this.#joined = false;
  }

  #startHeartbeat(ws) {
    clearInterval(this.#pingTimer);
    this.#pingTimer = setInterval(() => {
      if (Date.now() - this.#lastHeard > SILENCE_LIMIT_MS) {
        this.#abandon(ws);
        return;
      }
      this.send({ type: 'ping' });
    }, PING_INTERVAL_MS);
  }

  #scheduleRetry() {
    if (this.#final) return;
    const delayMs = backoffDelay(this.#attempt);
    this.#attempt += 1;
    this.emit('connection', { state: 'reconnecting', attempt: this.#attempt, delayMs });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), delayMs);
  }

  /** The network is back: don't sit out the rest of a long backoff. */
  #retryNow() {
    if (this.#retryTimer && !this.#final) this.#open();
  }

  #finish(detail) {
    if (this.#final) return;
    this.#final = true;
    // The place is gone with the visit (left, ended, refused): nothing to resume after a reload.
    saveResume(this.#token, null);
    clearTimeout(this.#retryTimer);
    globalThis.removeEventListener?.('online', this.#online);
    const ws = this.#ws;
    this.#teardown();
    // A final outcome reached without a close (leave while disconnected) drops the socket.
    try {
      ws?.close(1000);
    } catch {
      // Already closing.
    }
    this.emit('ended', detail);
  }
}
