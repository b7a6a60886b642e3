// The call screen: a tile per participant (video, name, state badges), the controls
// (mute, camera, screen share, leave, end visit) and the roster of who is here, which it
// keeps from the server's participant frames and uses to drive the mesh.

import { $, announce, h, showScreen } from '../dom.js';
import { openScreen } from '../media.js';
import { ChatView } from './chat.js';
import { displayName } from './lobby.js';

const LEFT_TEXT = { left: 'left the visit', removed: 'was removed from the visit', timed_out: 'lost connection and did not come back' };

export class CallView {
  #signaling;
  #mesh;
  #stream;
  #isDoctor;
  #roster = new Map();
  // Names of people who left, so the chat transcript still says who wrote what.
  #formerNames = new Map();
  #tiles = new Map();
  #muted = false;
  #cameraOff = false;
  #screenTrack = null;
  /** Whether this page sent `end_visit` (its final screen then says so). */
  endedByMe = false;

  constructor({ signaling, mesh, stream, isDoctor }) {
    this.#signaling = signaling;
    this.#mesh = mesh;
    this.#stream = stream;
    this.#isDoctor = isDoctor;
    this.chat = new ChatView(signaling, (id) => this.#nameOf(id));

    mesh.setTrack('audio', stream.getAudioTracks()[0] ?? null);
    mesh.setTrack('video', stream.getVideoTracks()[0] ?? null);
    mesh.addEventListener('peer', (e) => this.#attach(e.detail.id, e.detail.link));
    mesh.addEventListener('peer-state', (e) => this.#render(e.detail.id));

    $('#tiles').replaceChildren(this.#selfTile());
    this.#wireControls();
  }

  /** Our own `admitted` (first time, or again after a reconnect): who is here now. */
  admitted(participants) {
    this.#roster = new Map(participants.map((p) => [p.participant_id, p]));
    for (const id of [...this.#tiles.keys()]) if (!this.#roster.has(id)) this.#removeTile(id);
    const ids = [...this.#roster.keys()];
    this.#mesh.retain(ids);
    this.#mesh.connectTo(ids);
    for (const id of ids) this.#render(id);
    // After a reconnect, messages sent while we were away may be lost: re-offer, and
    // restart ICE where the media path broke meanwhile.
    this.#mesh.resync();
    if ($('#screen-call').hidden) {
      showScreen('screen-call');
      announce(this.#roster.size ? `You are in the visit with ${[...this.#roster.values()].map(displayName).join(', ')}.` : 'You are in the visit.');
    }
  }

  /** `participant_joined`: someone was admitted, or a doctor arrived. */
  joined(p) {
    this.#roster.set(p.participant_id, p);
    this.#mesh.connectTo([p.participant_id]);
    this.#render(p.participant_id);
    announce(`${displayName(p)} joined the visit.`);
  }

  /** `participant_updated`: media state or connection changed. */
  updated(p) {
    const before = this.#roster.get(p.participant_id);
    this.#roster.set(p.participant_id, p);
    if (before && before.connected !== p.connected) {
      if (p.connected) {
        announce(`${displayName(p)} is back.`);
        // Their signaling was down: whatever we sent meanwhile was dropped.
        this.#mesh.resync(p.participant_id);
      } else {
        announce(`${displayName(p)} lost connection. Waiting for them to come back.`);
      }
    }
    this.#render(p.participant_id);
  }

  /** `participant_left`. */
  left(id, reason) {
    const p = this.#roster.get(id);
    this.#roster.delete(id);
    this.#mesh.drop(id);
    this.#removeTile(id);
    if (p) {
      this.#formerNames.set(id, displayName(p));
      announce(`${displayName(p)} ${LEFT_TEXT[reason] ?? 'left the visit'}.`);
    }
  }

  /** Back to the waiting room (admission lost): no more peers. */
  suspend() {
    this.#mesh.closeAll();
    for (const id of [...this.#tiles.keys()]) this.#removeTile(id);
    this.#roster.clear();
  }

  stop() {
    this.#screenTrack?.stop();
    this.suspend();
  }

  /** Sends our microphone/camera/screen state (after every join, and on each change). */
  sendMedia() {
    const hasAudio = this.#stream.getAudioTracks().length > 0;
    const hasVideo = this.#stream.getVideoTracks().length > 0;
    this.#signaling.send({
      type: 'media',
      audio: hasAudio && !this.#muted,
      video: hasVideo && !this.#cameraOff,
      screen: Boolean(this.#screenTrack),
    });
  }

  #nameOf(id) {
    if (id === this.#signaling.participantId) return 'You';
    const p = this.#roster.get(id);
    return p ? displayName(p) : (this.#formerNames.get(id) ?? 'Someone who left');
  }

  #selfTile() {
    const video = h('video', { autoplay: true, playsInline: true, muted: true, 'aria-label': 'Your camera' });
    // Only a stream with video: an empty one would keep the element loading forever.
    video.srcObject = this.#stream.getVideoTracks().length ? this.#stream : null;
    this.selfBadges = h('span', { class: 'badges' });
    const tile = h(
      'li',
      { class: 'tile self', dataset: { self: '' } },
      video,
      (this.selfPlaceholder = h('div', { class: 'placeholder', 'aria-hidden': 'true', text: 'You', hidden: this.#stream.getVideoTracks().length > 0 })),
      h('div', { class: 'caption' }, h('span', { class: 'name', text: 'You' }), this.selfBadges),
    );
    this.#renderSelf();
    return tile;
  }

  #renderSelf() {
    const badges = [];
    if (this.#muted || this.#stream.getAudioTracks().length === 0) badges.push(['Muted', true]);
    if (this.#cameraOff || this.#stream.getVideoTracks().length === 0) badges.push(['Camera off', false]);
    if (this.#screenTrack) badges.push(['Sharing your screen', false]);
    this.selfBadges.replaceChildren(...badges.map(([text, alert]) => h('span', { class: alert ? 'badge alert' : 'badge', text })));
    this.selfPlaceholder.hidden = !(this.#cameraOff || this.#stream.getVideoTracks().length === 0);
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
        if (!this.#signaling.send({ type: 'remove', participant_id: id })) announce('Not connected. Try again in a moment.');
      });
      actions.append(tile.remove);
    }
    tile.li.append(video, tile.placeholder, h('div', { class: 'caption' }, tile.name, tile.badges), actions);
    $('#tiles').append(tile.li);
    this.#tiles.set(id, tile);
    const link = this.#mesh.link(id);
    if (link) this.#attach(id, link);
    return tile;
  }

  #attach(id, link) {
    if (!this.#roster.has(id)) return;
    const tile = this.#tileFor(id);
    if (tile.video.srcObject !== link.remoteStream) {
      tile.video.srcObject = link.remoteStream;
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
    const p = this.#roster.get(id);
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
      const state = this.#mesh.link(id)?.connectionState ?? 'new';
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
    const audio = this.#stream.getAudioTracks()[0];
    const video = this.#stream.getVideoTracks()[0];

    const renderButtons = () => {
      mic.textContent = !audio ? 'No microphone' : this.#muted ? 'Unmute' : 'Mute';
      mic.disabled = !audio;
      mic.classList.toggle('active', this.#muted);
      cam.textContent = !video ? 'No camera' : this.#cameraOff ? 'Camera on' : 'Camera off';
      cam.disabled = !video;
      cam.classList.toggle('active', this.#cameraOff);
      screen.textContent = this.#screenTrack ? 'Stop sharing' : 'Share screen';
      screen.classList.toggle('active', Boolean(this.#screenTrack));
      this.#renderSelf();
    };

    mic.addEventListener('click', () => {
      this.#muted = !this.#muted;
      // A disabled track sends silence: no renegotiation, and unmuting is instant.
      audio.enabled = !this.#muted;
      renderButtons();
      this.sendMedia();
      announce(this.#muted ? 'Microphone muted.' : 'Microphone on.');
    });
    cam.addEventListener('click', () => {
      this.#cameraOff = !this.#cameraOff;
      video.enabled = !this.#cameraOff;
      renderButtons();
      this.sendMedia();
      announce(this.#cameraOff ? 'Camera off.' : 'Camera on.');
    });

    // Screen sharing is the doctor's (showing results, images); it needs getDisplayMedia,
    // which phones mostly lack.
    screen.hidden = !(this.#isDoctor && navigator.mediaDevices?.getDisplayMedia);
    const stopSharing = () => {
      if (!this.#screenTrack) return;
      this.#screenTrack.stop();
      this.#screenTrack = null;
      this.#mesh.setTrack('video', video ?? null);
      renderButtons();
      this.sendMedia();
      announce('Screen sharing stopped.');
    };
    screen.addEventListener('click', async () => {
      if (this.#screenTrack) return stopSharing();
      const track = await openScreen();
      if (!track) return;
      this.#screenTrack = track;
      // The browser's own "Stop sharing" bar ends the track without our button.
      track.addEventListener('ended', stopSharing);
      this.#mesh.setTrack('video', track);
      renderButtons();
      this.sendMedia();
      announce('You are sharing your screen.');
    });

    $('#btn-leave').addEventListener('click', () => this.#signaling.leave());
    const end = $('#btn-end');
    end.hidden = !this.#isDoctor;
    const dialog = $('#end-dialog');
    end.addEventListener('click', () => dialog.showModal());
    $('#end-cancel').addEventListener('click', () => dialog.close());
    $('#end-confirm').addEventListener('click', () => {
      dialog.close();
      if (this.#signaling.send({ type: 'end_visit' })) this.endedByMe = true;
      else announce('Not connected. Try again in a moment.');
    });
    renderButtons();
  }
}

function initials(name) {
  const parts = name.split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2)).toUpperCase();
}
