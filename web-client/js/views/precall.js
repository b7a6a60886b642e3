// The pre-call check: camera preview, microphone level, device pickers, and for each way
// opening a device can fail, what happened and the steps to fix it in this browser. On a
// phone the explanation, Try again and the join button are on the first screen. Resolves
// with the stream to call with when the person presses the join button; joining without a
// working device stays possible (they can still see, hear and chat).

import { listDevices, openLocalMedia, stopStream } from '../../sdk/index.js';
import { $, alertText, h, showScreen } from '../dom.js';
import { fixSteps } from '../help.js';

/** What each case of `classifyMediaError` means, in one sentence. */
const PROBLEM_TEXT = {
  denied: 'access was blocked.',
  missing: 'none was found.',
  busy: 'it is in use by another app.',
  insecure: 'this page was not opened over a secure connection, so the browser does not allow it here.',
  unknown: 'it could not be started.',
};
const KIND_NAME = { video: 'Camera', audio: 'Microphone', both: 'Camera and microphone' };
const WITHOUT = { video: 'camera', audio: 'microphone', both: 'camera and microphone' };

export function runPrecall({ isDoctor }) {
  const video = $('#precall-video');
  const cameraSelect = $('#camera-select');
  const micSelect = $('#mic-select');
  const retry = $('#precall-retry');
  const join = $('#precall-join');
  const meter = new LevelMeter($('#mic-level'));
  let stream = new MediaStream();
  let opening = null;

  const verb = isDoctor ? 'Start' : 'Join';
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
    // No picture: the problem box says why; an empty black box would only push it down.
    $('#precall-preview').hidden = !hasVideo;
    meter.watch(stream);
    showProblems(result.problems);
    await fillPickers(result.problems);
    join.disabled = false;
  }

  function reopen() {
    opening = (opening ?? Promise.resolve()).then(open, open);
  }

  function showProblems(problems) {
    const entries = Object.entries(problems);
    // The same problem for both devices is said once.
    const both = entries.length === 2 && problems.audio === problems.video;
    const merged = both ? [['both', problems.audio]] : entries;
    $('#precall-problem-text').replaceChildren(...merged.map(([kind, problem]) => h('p', { text: `${KIND_NAME[kind]}: ${PROBLEM_TEXT[problem]}` })));
    // One set of steps: for the camera's problem if it has one (that is what people miss most).
    const problem = problems.video ?? problems.audio;
    $('#precall-steps').replaceChildren(...(problem ? fixSteps(problem) : []).map((text) => h('li', { text })));
    const missing = entries.length === 2 ? 'see or hear you' : problems.video ? 'see you' : 'hear you';
    $('#precall-still').textContent = entries.length ? `You can still join, but the others will not ${missing}.` : '';
    $('#precall-problems').hidden = entries.length === 0;
    // The preview's instructions mean nothing without a picture; the space goes to the fix.
    $('#precall-intro').hidden = Boolean(problems.video);
    if (entries.length) alertText(`${$('#precall-problem-text').textContent} ${$('#precall-still').textContent}`);
    const lacking = entries.length === 2 ? 'both' : problems.video ? 'video' : problems.audio ? 'audio' : null;
    join.textContent = lacking ? `${verb} without ${WITHOUT[lacking]}` : isDoctor ? 'Start the visit' : 'Join the visit';
  }

  async function fillPickers(problems) {
    const { cameras, microphones } = await listDevices();
    const current = (kind) => stream.getTracks().find((t) => t.kind === kind)?.getSettings().deviceId;
    fill(cameraSelect, cameras, current('video'), 'Camera');
    fill(micSelect, microphones, current('audio'), 'Microphone');
    // A picker is only worth its space when picking another device could help.
    const useless = (problem, devices) => Boolean(problem) && (['denied', 'insecure'].includes(problem) || devices.length < 2);
    $('#camera-field').hidden = useless(problems.video, cameras);
    $('#mic-field').hidden = useless(problems.audio, microphones);
  }

  cameraSelect.addEventListener('change', reopen);
  micSelect.addEventListener('change', reopen);
  retry.addEventListener('click', reopen);
  navigator.mediaDevices?.addEventListener?.('devicechange', () => fillPickers({}));
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
  const usable = devices.filter((d) => d.deviceId);
  const options = usable.map((d, i) => h('option', { value: d.deviceId, text: d.label || `${fallbackName} ${i + 1}` }));
  if (options.length === 0) options.push(h('option', { value: '', text: `No ${fallbackName.toLowerCase()} found` }));
  select.replaceChildren(...options);
  if (selectedId) select.value = selectedId;
  select.disabled = usable.length === 0;
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
