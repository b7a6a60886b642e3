// The call screen: a tile per participant (video, name, state badges) and the controls
// (mute, camera, screen share, leave, end visit). Who is here, their media and the peer
// connections come from the SDK's Visit; this view only draws them.

import { $, announce, h, showScreen } from '../dom.js';
import { ChatView } from './chat.js';
import { displayName } from './lobby.js';

const LEFT_TEXT = { left: 'left the visit', removed: 'was removed from the visit', timed_out: 'lost connection and did not come back' };

export class CallView {
  #visit;
  #isDoctor;
  #tiles = new Map();
  // Whether each participant's signaling was up when last drawn, to announce changes.
  #connected = new Map();
  /** Whether this page sent `end_visit` (its final screen then says so). */
  endedByMe = false;

  constructor({ visit, isDoctor }) {
    this.#visit = visit;
    this.#isDoctor = isDoctor;
    this.chat = new ChatView(visit, (id) => this.#nameOf(id));

    visit.on('remote_stream', ({ participantId, stream }) => this.#attach(participantId, stream));
    visit.on('peer_state', ({ participantId }) => this.#render(participantId));
    visit.on('admitted', () => this.#admitted());
    visit.on('participant_joined', ({ participant }) => this.#joined(participant));
    visit.on('participant_updated', ({ participant }) => this.#updated(participant));
    visit.on('participant_left', ({ participant_id, reason }) => this.#left(participant_id, reason));
    visit.on('waiting', () => this.#clear());
    visit.on('ended', () => this.#clear());

    $('#tiles').replaceChildren(this.#selfTile());
    this.#wireControls();
  }

  /** Our own `admitted` (first time, or again after a reconnect): who is here now. */
  #admitted() {
    const here = this.#visit.participants;
    for (const id of [...this.#tiles.keys()]) if (!here.has(id)) this.#removeTile(id);
    for (const [id, p] of here) {
      this.#connected.set(id, p.connected !== false);
      this.#render(id);
    }
    if ($('#screen-call').hidden) {
      showScreen('screen-call');
      announce(here.size ? `You are in the visit with ${[...here.values()].map(displayName).join(', ')}.` : 'You are in the visit.');
    }
  }

  /** `participant_joined`: someone was admitted, or a doctor arrived. */
  #joined(p) {
    this.#connected.set(p.participant_id, p.connected !== false);
    this.#render(p.participant_id);
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
    if (p) announce(`${displayName(p)} ${LEFT_TEXT[reason] ?? 'left the visit'}.`);
  }

  /** Back to the waiting room, or the visit is over: no more peers. */
  #clear() {
    for (const id of [...this.#tiles.keys()]) this.#removeTile(id);
    this.#connected.clear();
  }

  #nameOf(id) {
    if (id === this.#visit.self?.participant_id) return 'You';
    const p = this.#visit.participant(id);
    return p ? displayName(p) : 'Someone who left';
  }

  #selfTile() {
    const stream = this.#visit.localStream;
    const video = h('video', { autoplay: true, playsInline: true, muted: true, 'aria-label': 'Your camera' });
    // Only a stream with video: an empty one would keep the element loading forever.
    video.srcObject = stream.getVideoTracks().length ? stream : null;
    this.selfBadges = h('span', { class: 'badges' });
    this.selfPlaceholder = h('div', { class: 'placeholder', 'aria-hidden': 'true', text: 'You' });
    const tile = h('li', { class: 'tile self', dataset: { self: '' } }, video, this.selfPlaceholder, h('div', { class: 'caption' }, h('span', { class: 'name', text: 'You' }), this.selfBadges));
    this.#renderSelf();
    return tile;
  }

  #renderSelf() {
    const media = this.#visit.media;
    const badges = [];
    if (!media.audio) badges.push(['Muted', true]);
    if (!media.video) badges.push(['Camera off', false]);
    if (media.screen) badges.push(['Sharing your screen', false]);
    this.selfBadges.replaceChildren(...badges.map(([text, alert]) => h('span', { class: alert ? 'badge alert' : 'badge', text })));
    this.selfPlaceholder.hidden = media.video;
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
    tile.badges.replaceChildren(...badges.map(([text, alert]) => h('span', { class: alert ? 'badge alert' : 'badge', text })));
    tile.li.setAttribute('aria-label', [name, ...badges.map(([text]) => text)].join(', '));
  }

  #removeTile(id) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    this.#tiles.delete(id);
    tile.video.srcObject = null;
    tile.li.remove();
  }

  #wireControls() {
    const mic = $('#btn-mic');
    const cam = $('#btn-cam');
    const screen = $('#btn-screen');
    const stream = this.#visit.localStream;

    const renderButtons = () => {
      const hasAudio = stream.getAudioTracks().length > 0;
      const hasVideo = stream.getVideoTracks().length > 0;
      const media = this.#visit.media;
      mic.textContent = !hasAudio ? 'No microphone' : media.audio ? 'Mute' : 'Unmute';
      mic.disabled = !hasAudio;
      mic.classList.toggle('active', hasAudio && !media.audio);
      cam.textContent = !hasVideo ? 'No camera' : media.video ? 'Camera off' : 'Camera on';
      cam.disabled = !hasVideo;
      cam.classList.toggle('active', hasVideo && !media.video);
      screen.textContent = media.screen ? 'Stop sharing' : 'Share screen';
      screen.classList.toggle('active', media.screen);
      this.#renderSelf();
    };
    // Every change of our media, whoever made it (the browser's "Stop sharing" bar too).
    this.#visit.on('local_media', renderButtons);

    mic.addEventListener('click', () => {
      // A disabled track sends silence: no renegotiation, and unmuting is instant.
      const { audio } = this.#visit.setMedia({ audio: !this.#visit.media.audio });
      announce(audio ? 'Microphone on.' : 'Microphone muted.');
    });
    cam.addEventListener('click', () => {
      const { video } = this.#visit.setMedia({ video: !this.#visit.media.video });
      announce(video ? 'Camera on.' : 'Camera off.');
    });

    // Screen sharing is the doctor's (showing results, images); it needs getDisplayMedia,
    // which phones mostly lack.
    screen.hidden = !(this.#isDoctor && navigator.mediaDevices?.getDisplayMedia);
    screen.addEventListener('click', async () => {
      if (this.#visit.media.screen) {
        this.#visit.stopScreenShare();
        announce('Screen sharing stopped.');
      } else if (await this.#visit.shareScreen()) {
        announce('You are sharing your screen.');
      }
    });

    $('#btn-leave').addEventListener('click', () => this.#visit.leave());
    const end = $('#btn-end');
    end.hidden = !this.#isDoctor;
    const dialog = $('#end-dialog');
    end.addEventListener('click', () => dialog.showModal());
    $('#end-cancel').addEventListener('click', () => dialog.close());
    $('#end-confirm').addEventListener('click', () => {
      dialog.close();
      if (this.#visit.endVisit()) this.endedByMe = true;
      else announce('Not connected. Try again in a moment.');
    });
    renderButtons();
  }
}

function initials(name) {
  const parts = name.split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2)).toUpperCase();
}
