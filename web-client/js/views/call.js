// The call screen's stage: a tile per other participant (video, name, state badges) filling
// the screen, our own picture floating over it, and the title that says who we are with.
// Who is here, their media and the peer connections come from the SDK's Visit; this view
// draws them, says arrivals and departures aloud, and never lets focus fall to nowhere.

import { $, announce, focusOn, h, showScreen } from '../dom.js';
import { ChatView } from './chat.js';
import { Controls } from './controls.js';
import { displayName } from './lobby.js';
import { Panels } from './panels.js';
import { makeMovable } from './pip.js';
import { qualityBadge, showOwnQuality } from './quality.js';

const LEFT_TEXT = { left: 'left the visit', removed: 'was removed from the visit', timed_out: 'lost connection and did not come back' };

export class CallView {
  #visit;
  #isDoctor;
  #tiles = new Map();
  // Whether each participant's signaling was up when last drawn, to announce changes.
  #connected = new Map();

  constructor({ visit, isDoctor, backToQueue = false }) {
    this.#visit = visit;
    this.#isDoctor = isDoctor;
    this.panels = new Panels({ isDoctor });
    // From the provider's dashboard, leaving the call goes back to the queue.
    if (backToQueue) $('#btn-leave .label').textContent = 'Back to queue';
    this.chat = new ChatView(visit, { nameOf: (id) => this.#nameOf(id), panels: this.panels });
    this.controls = new Controls({ visit, isDoctor, onMediaChange: () => this.#renderSelf() });

    visit.on('remote_stream', ({ participantId, stream }) => this.#attach(participantId, stream));
    visit.on('peer_state', ({ participantId }) => this.#render(participantId));
    visit.on('admitted', () => this.#admitted());
    visit.on('participant_joined', ({ participant }) => this.#joined(participant));
    visit.on('participant_updated', ({ participant }) => this.#updated(participant));
    visit.on('participant_left', ({ participant_id, reason }) => this.#left(participant_id, reason));
    visit.on('waiting', () => this.#clear());
    visit.on('ended', () => this.#clear());
    visit.on('quality', (frame) => showOwnQuality(frame));

    // A participant's note about their own weak connection, over the stage.
    if (!$('#own-quality')) {
      $('#stage').append(h('p', { id: 'own-quality', class: 'own-quality', role: 'status', hidden: true, text: 'Your connection is weak: try moving closer to your Wi-Fi.' }));
    }
    const selfView = $('#self-view');
    makeMovable(selfView, $('#stage'));
    this.#attachSelf();
    this.#renderSelf();
    this.#renderStage();
  }

  /** The visit is over for this page: stop following the window. */
  dispose() {
    this.panels.dispose();
  }

  /** Whether this page ended the visit (its final screen then says so). */
  get endedByMe() {
    return this.controls.endedByMe;
  }

  /** Our own `admitted` (first time, or again after a reconnect): who is here now. */
  #admitted() {
    const here = this.#visit.participants;
    for (const id of [...this.#tiles.keys()]) if (!here.has(id)) this.#removeTile(id);
    for (const [id, p] of here) {
      this.#connected.set(id, p.connected !== false);
      this.#render(id);
    }
    this.#renderStage();
    if ($('#screen-call').hidden) {
      // Focus goes to the visible title over the video, which says who we are with.
      showScreen('screen-call', { focus: $('#call-title') });
      this.panels.layout();
      announce(here.size ? `You are in the visit with ${names(here)}.` : 'You are in the visit.');
    }
  }

  /** `participant_joined`: someone was admitted, or a doctor arrived. */
  #joined(p) {
    this.#connected.set(p.participant_id, p.connected !== false);
    this.#render(p.participant_id);
    this.#renderStage();
    announce(`${displayName(p)} joined the visit.`);
  }

  /** `participant_updated`: media state or connection changed. */
  #updated(p) {
    const id = p.participant_id;
    const now = p.connected !== false;
    if (this.#connected.has(id) && this.#connected.get(id) !== now) {
      announce(now ? `${displayName(p)} is back.` : `${displayName(p)} lost connection. Waiting for them to come back.`);
    }
    this.#connected.set(id, now);
    this.#render(id);
  }

  /** `participant_left`. */
  #left(id, reason) {
    const p = this.#visit.participant(id);
    this.#connected.delete(id);
    this.#removeTile(id);
    this.#renderStage();
    if (p) announce(`${displayName(p)} ${LEFT_TEXT[reason] ?? 'left the visit'}.`);
  }

  /** Back to the waiting room, or the visit is over: no more peers. */
  #clear() {
    for (const id of [...this.#tiles.keys()]) this.#removeTile(id);
    this.#connected.clear();
    this.#renderStage();
  }

  #nameOf(id) {
    if (id === this.#visit.self?.participant_id) return 'You';
    const p = this.#visit.participant(id);
    return p ? displayName(p) : 'Someone who left';
  }

  /** The title over the video and the "nobody here yet" line. */
  #renderStage() {
    const here = this.#visit.participants;
    $('#call-title').textContent = here.size ? `Visit with ${names(here)}` : 'Video visit';
    $('#stage-empty').hidden = here.size > 0;
    $('#stage-empty').textContent = this.#isDoctor ? 'No one else is in the visit yet. Let people in from the waiting room.' : 'Waiting for the others to join…';
  }

  #attachSelf() {
    const stream = this.#visit.localStream;
    // Only a stream with video: an empty one would keep the element loading forever.
    $('#self-video').srcObject = stream.getVideoTracks().length ? stream : null;
  }

  #renderSelf() {
    const media = this.#visit.media;
    const badges = [];
    if (!media.audio) badges.push(['Muted', true]);
    if (!media.video) badges.push(['Camera off', false]);
    if (media.screen) badges.push(['Sharing your screen', false]);
    $('#self-badges').replaceChildren(...badges.map(([text, alert]) => h('span', { class: alert ? 'badge alert' : 'badge', text })));
    $('#self-placeholder').hidden = media.video;
    this.#attachSelf();
  }

  #tileFor(id) {
    let tile = this.#tiles.get(id);
    if (tile) return tile;
    const video = h('video', { autoplay: true, playsInline: true });
    const soundButton = h('button', { type: 'button', text: 'Turn on sound', hidden: true });
    soundButton.addEventListener('click', () => {
      video.muted = false;
      soundButton.hidden = true;
      video.play().catch(() => {});
    });
    const actions = h('div', { class: 'tile-actions' }, soundButton);
    tile = {
      li: h('li', { class: 'tile', dataset: { participant: id } }),
      video,
      soundButton,
      placeholder: h('div', { class: 'placeholder', 'aria-hidden': 'true' }),
      name: h('span', { class: 'name' }),
      badges: h('span', { class: 'badges' }),
    };
    if (this.#isDoctor) {
      tile.remove = h('button', { type: 'button', class: 'danger', text: 'Remove' });
      tile.remove.addEventListener('click', () => {
        if (!this.#visit.remove(id)) announce('Not connected. Try again in a moment.');
      });
      actions.append(tile.remove);
    }
    tile.li.append(video, tile.placeholder, h('div', { class: 'caption' }, tile.name, tile.badges), actions);
    $('#tiles').append(tile.li);
    this.#tiles.set(id, tile);
    const stream = this.#visit.remoteStream(id);
    if (stream) this.#attach(id, stream);
    return tile;
  }

  #attach(id, stream) {
    if (!this.#visit.participants.has(id)) return;
    const tile = this.#tileFor(id);
    if (tile.video.srcObject !== stream) {
      tile.video.srcObject = stream;
      this.#play(tile);
    }
    this.#render(id);
  }

  /** Starts playback; if the browser blocks sound without a click, plays muted and offers a button. */
  #play(tile) {
    tile.video.play().catch((err) => {
      if (err.name !== 'NotAllowedError') return;
      tile.video.muted = true;
      tile.soundButton.hidden = false;
      tile.video.play().catch(() => {});
    });
  }

  #render(id) {
    const p = this.#visit.participants.get(id);
    if (!p) return;
    const tile = this.#tileFor(id);
    const name = displayName(p);
    tile.name.textContent = name;
    tile.placeholder.textContent = initials(name);
    const media = p.media ?? {};
    const showsVideo = media.video || media.screen;
    tile.placeholder.hidden = Boolean(showsVideo);
    tile.li.classList.toggle('sharing', Boolean(media.screen));
    if (tile.remove) tile.remove.setAttribute('aria-label', `Remove ${name} from the visit`);
    tile.soundButton.setAttribute('aria-label', `Turn on sound from ${name}`);
    const badges = [];
    if (p.connected === false) badges.push(['Reconnecting…', true]);
    else {
      const state = this.#visit.peerConnection(id)?.connectionState ?? 'new';
      if (state === 'new' || state === 'connecting') badges.push(['Connecting…', false]);
      if (state === 'disconnected' || state === 'failed') badges.push(['Video interrupted, reconnecting…', true]);
    }
    if (!media.audio) badges.push(['Muted', true]);
    if (!media.video && !media.screen) badges.push(['Camera off', false]);
    if (media.screen) badges.push(['Sharing screen', false]);
    // Doctors see everyone's connection quality (docs/quality.md).
    const quality = this.#isDoctor ? qualityBadge(p) : null;
    tile.badges.replaceChildren(...badges.map(([text, alert]) => h('span', { class: alert ? 'badge alert' : 'badge', text })), ...(quality ? [quality] : []));
    tile.li.dataset.quality = (this.#isDoctor && p.quality) || '';
    tile.li.setAttribute('aria-label', [name, ...badges.map(([text]) => text), ...(quality ? [quality.title] : [])].join(', '));
  }

  #removeTile(id) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    const hadFocus = tile.li.contains(document.activeElement);
    this.#tiles.delete(id);
    tile.video.srcObject = null;
    tile.li.remove();
    // Their Remove button had focus: land on the title, which says who is still here.
    if (hadFocus && !$('#screen-call').hidden) focusOn($('#call-title'));
  }
}

function names(participants) {
  return [...participants.values()].map(displayName).join(', ');
}

function initials(name) {
  const parts = name.split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2)).toUpperCase();
}
