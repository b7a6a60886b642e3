// The pre-call check: camera preview, microphone level, device pickers, and a plain
// message for each way opening a device can fail. Resolves with the stream to call with
// when the person presses Join; joining without a working device is allowed (they can
// still see, hear and chat), the message says what the others will miss.

import { listDevices, openLocalMedia, stopStream } from '../../sdk/index.js';
import { $, h, showScreen } from '../dom.js';

/** What each case of `classifyMediaError` means for the person, and what to do. */
const PROBLEM_TEXT = {
  denied: 'Access was blocked. Allow the camera and microphone for this site in your browser settings (the icon next to the address), then press Try again.',
  missing: 'No device was found. Connect one, or check that it is switched on, then press Try again.',
  busy: 'The device is in use by another app (another call, or the camera app). Close that app, then press Try again.',
  insecure: 'This page was not opened over a secure connection, so the browser does not allow the camera or microphone here. Ask your clinic for the correct link.',
  unknown: 'The device could not be started. Press Try again, or restart your browser.',
};

const KIND_NAME = { video: 'Camera', audio: 'Microphone', both: 'Camera and microphone' };

export function runPrecall({ isDoctor }) {
  const video = $('#precall-video');
  const cameraSelect = $('#camera-select');
  const micSelect = $('#mic-select');
  const problemsBox = $('#precall-problems');
  const retry = $('#precall-retry');
  const join = $('#precall-join');
  const meter = new LevelMeter($('#mic-level'));
  let stream = new MediaStream();
  let opening = null;

  join.textContent = isDoctor ? 'Start the visit' : 'Join the visit';
  showScreen('screen-precall');

  async function open() {
    join.disabled = true;
    stopStream(stream);
    const result = await openLocalMedia({ videoId: cameraSelect.value || undefined, audioId: micSelect.value || undefined });
    stream = result.stream;
    const hasVideo = stream.getVideoTracks().length > 0;
    // A <video> given a stream without video never finishes loading, which holds the
    // page's load event open: leave it empty instead.
    video.srcObject = hasVideo ? stream : null;
    $('#precall-novideo').hidden = hasVideo;
    meter.watch(stream);
    showProblems(result.problems);
    await fillPickers();
    join.disabled = false;
  }

  function reopen() {
    opening = (opening ?? Promise.resolve()).then(open, open);
  }

  function showProblems(problems) {
    const entries = Object.entries(problems);
    // The same problem for both devices is said once.
    const merged = entries.length === 2 && problems.audio === problems.video ? [['both', problems.audio]] : entries;
    const lines = merged.map(([kind, problem]) => h('p', { text: `${KIND_NAME[kind]}: ${PROBLEM_TEXT[problem]}` }));
    if (lines.length) {
      const missing = entries.length === 2 ? 'see or hear you' : problems.video ? 'see you' : 'hear you';
      lines.push(h('p', { text: `You can still join, but the others will not ${missing}.` }));
    }
    problemsBox.replaceChildren(...lines);
    retry.hidden = lines.length === 0;
  }

  async function fillPickers() {
    const { cameras, microphones } = await listDevices();
    const current = (kind) => stream.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
    fill(cameraSelect, cameras, current('video'), 'Camera');
    fill(micSelect, microphones, current('audio'), 'Microphone');
  }

  cameraSelect.addEventListener('change', reopen);
  micSelect.addEventListener('change', reopen);
  retry.addEventListener('click', reopen);
  navigator.mediaDevices?.addEventListener?.('devicechange', () => fillPickers());
  reopen();

  return new Promise((resolve) => {
    join.addEventListener(
      'click',
      async () => {
        await opening;
        meter.stop();
        resolve(stream);
      },
      { once: true },
    );
  });
}

function fill(select, devices, selectedId, fallbackName) {
  const options = devices.map((d, i) => h('option', { value: d.deviceId, text: d.label || `${fallbackName} ${i + 1}` }));
  if (options.length === 0) options.push(h('option', { value: '', text: `No ${fallbackName.toLowerCase()} found` }));
  select.replaceChildren(...options);
  if (selectedId) select.value = selectedId;
  select.disabled = devices.length === 0;
}

/** Drives a <meter> from a stream's microphone, so people see that they are heard. */
class LevelMeter {
  #meter;
  #context = null;
  #source = null;
  #frame = 0;

  constructor(meter) {
    this.#meter = meter;
  }

  watch(stream) {
    this.#disconnect();
    if (stream.getAudioTracks().length === 0 || !window.AudioContext) return;
    this.#context ??= new AudioContext();
    // Autoplay rules keep the context suspended until the person interacts with the page.
    if (this.#context.state === 'suspended') {
      document.addEventListener('click', () => this.#context?.resume(), { once: true });
    }
    this.#source = this.#context.createMediaStreamSource(stream);
    const analyser = this.#context.createAnalyser();
    analyser.fftSize = 512;
    this.#source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      this.#meter.value = Math.min(1, peak * 2);
      this.#frame = requestAnimationFrame(tick);
    };
    tick();
  }

  stop() {
    this.#disconnect();
    this.#context?.close();
    this.#context = null;
  }

  #disconnect() {
    cancelAnimationFrame(this.#frame);
    this.#source?.disconnect();
    this.#source = null;
    this.#meter.value = 0;
  }
}
