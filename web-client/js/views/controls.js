// The controls bar at the bottom of the call: microphone, camera, flip camera (where there
// are two), screen share (doctors, where the browser can), leave, and the doctor's End visit
// with its confirmation dialog. The chat and waiting-room buttons belong to the panels.

import { listDevices } from '../../sdk/index.js';
import { $, alertText, announce } from '../dom.js';

export class Controls {
  #visit;
  #isDoctor;
  #onMediaChange;
  #cameras = [];
  #flipping = false;
  /** Whether this page sent `end_visit`. */
  endedByMe = false;

  constructor({ visit, isDoctor, onMediaChange }) {
    this.#visit = visit;
    this.#isDoctor = isDoctor;
    this.#onMediaChange = onMediaChange;
    // Every change of our media, whoever made it (the browser's "Stop sharing" bar too).
    visit.on('local_media', () => this.#render());

    $('#btn-mic').addEventListener('click', () => {
      // A disabled track sends silence: no renegotiation, and unmuting is instant.
      const { audio } = visit.setMedia({ audio: !visit.media.audio });
      announce(audio ? 'Microphone on.' : 'Microphone muted.');
    });
    $('#btn-cam').addEventListener('click', () => {
      const { video } = visit.setMedia({ video: !visit.media.video });
      announce(video ? 'Camera on.' : 'Camera off.');
    });
    $('#btn-flip').addEventListener('click', () => this.#flip());
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.#findCameras());
    this.#findCameras();

    // Screen sharing is the doctor's (showing results, images); it needs getDisplayMedia,
    // which phones mostly lack.
    const screen = $('#btn-screen');
    screen.hidden = !(isDoctor && navigator.mediaDevices?.getDisplayMedia);
    screen.addEventListener('click', async () => {
      if (visit.media.screen) {
        visit.stopScreenShare();
        announce('Screen sharing stopped.');
      } else if (await visit.shareScreen()) {
        announce('You are sharing your screen.');
      }
    });

    $('#btn-leave').addEventListener('click', () => visit.leave());
    this.#wireEnd();
    this.#render();
  }

  #render() {
    const stream = this.#visit.localStream;
    const hasAudio = stream.getAudioTracks().length > 0;
    const hasVideo = stream.getVideoTracks().length > 0;
    const media = this.#visit.media;
    setButton($('#btn-mic'), !hasAudio ? 'No microphone' : media.audio ? 'Mute' : 'Unmute', { disabled: !hasAudio, off: !media.audio });
    setButton($('#btn-cam'), !hasVideo ? 'No camera' : media.video ? 'Camera off' : 'Camera on', { disabled: !hasVideo, off: !media.video });
    setButton($('#btn-screen'), media.screen ? 'Stop sharing' : 'Share screen', { off: media.screen });
    $('#btn-flip').hidden = !(hasVideo && this.#cameras.length > 1);
    this.#onMediaChange();
  }

  async #findCameras() {
    this.#cameras = (await listDevices().catch(() => ({ cameras: [] }))).cameras.filter((c) => c.deviceId);
    this.#render();
  }

  /** The next camera (front and back on a phone). */
  async #flip() {
    const current = this.#visit.localStream.getVideoTracks()[0];
    if (!current || this.#flipping || this.#cameras.length < 2) return;
    this.#flipping = true;
    const currentId = current.getSettings().deviceId;
    const index = this.#cameras.findIndex((c) => c.deviceId === currentId);
    const next = this.#cameras[(index + 1) % this.#cameras.length];
    // The new camera is opened and sent before the old one stops, so the others never see
    // a frozen picture in between. Phones that cannot hold two cameras open refuse that;
    // they get the old one closed first.
    let track = await openCamera(next.deviceId);
    if (!track) {
      current.stop();
      track = await openCamera(next.deviceId);
    }
    const turned = Boolean(track);
    if (!turned && current.readyState === 'ended') track = await openCamera(currentId);
    if (track) this.#visit.setTrack('video', track)?.stop();
    this.#flipping = false;
    if (turned) announce('Switched camera.');
    else alertText('The other camera could not be started.');
  }

  #wireEnd() {
    const end = $('#btn-end');
    end.hidden = !this.#isDoctor;
    const dialog = $('#end-dialog');
    end.addEventListener('click', () => dialog.showModal());
    $('#end-cancel').addEventListener('click', () => dialog.close());
    // Closing the dialog (Cancel, Escape) puts focus back on End visit.
    dialog.addEventListener('close', () => {
      if (!this.endedByMe && !$('#screen-call').hidden) end.focus();
    });
    $('#end-confirm').addEventListener('click', () => {
      this.endedByMe = this.#visit.endVisit();
      dialog.close();
      if (!this.endedByMe) alertText('Not connected. Try again in a moment.');
    });
  }
}

function setButton(button, label, { disabled = false, off = false } = {}) {
  button.querySelector('.label').textContent = label;
  button.disabled = disabled;
  button.classList.toggle('off', off);
}

async function openCamera(deviceId) {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { deviceId: { exact: deviceId }, width: { ideal: 1280 }, height: { ideal: 720 } } });
    return stream.getVideoTracks()[0] ?? null;
  } catch {
    return null;
  }
}
