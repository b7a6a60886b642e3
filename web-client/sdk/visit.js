// A visit, as one person's page takes part in it: the signaling connection (join, resume,
// backoff), who is here and who is waiting, the WebRTC mesh to everyone admitted (perfect
// negotiation, ICE restarts), our own media and its state, chat and the doctor's actions.
//
// Every server frame is re-emitted as an event named by its `type`, with the frame as it
// came as the detail, after the Visit has taken what it needs from it; `frame` carries
// each of them too, so frames this version does not know reach the page unchanged. The
// Visit's own events: `connection`, `ended`, `remote_stream`, `peer_state`, `local_media`,
// `precheck` (see index.d.ts).
//
// Call quality (docs/quality.md): while admitted, each peer connection's statistics go to the
// server in one `stats` frame every STATS_INTERVAL_MS; while waiting, the result of the
// network check goes once as `precheck`, so the doctor knows before admitting.

import { Emitter } from './emitter.js';
import { openScreen } from './media.js';
import { Mesh } from './mesh.js';
import { Signaling } from './signaling.js';
import { checkNetwork, readPeer } from './stats.js';
import { readClaims } from './token.js';

/** How often a `stats` frame goes out during a call (the server takes one per 4 s at most). */
export const STATS_INTERVAL_MS = 5000;

export class Visit extends Emitter {
  #signaling;
  #mesh;
  #claims;
  #state = 'idle';
  #self = null;
  #visit = null;
  #iceServers = [];
  #participants = new Map();
  // People who left, so a transcript can still say who wrote what.
  #former = new Map();
  #waiting = [];
  #stream;
  #screen = null;
  #wanted = { audio: true, video: true };
  #statsTimer = 0;
  #statsSnapshots = new Map();
  #quality = null;
  #precheck = null;
  #precheckRun = null;
  #checkNetwork;

  /**
   * @param {object} o
   * @param {string} o.token  the join token
   * @param {string} [o.url]  the `/ws` URL (default: this page's origin)
   * @param {MediaStream} [o.stream]  camera and microphone to send (default: nothing)
   * @param {boolean} [o.precheck]  run the network check and report it while waiting (default: true)
   */
  constructor({ token, url, stream, precheck = true } = {}) {
    super();
    this.#checkNetwork = precheck ? checkNetwork : null;
    if (typeof token !== 'string' || token === '') throw new TypeError('Visit: a join token is required');
    this.#claims = readClaims(token);
    this.#stream = stream ?? new MediaStream();
    this.#signaling = new Signaling({ token, url });
    this.#mesh = new Mesh({
      selfId: () => this.#self?.participant_id,
      iceServers: () => this.#iceServers,
      send: (to, data) => this.#signaling.send({ type: 'signal', to, data }),
    });
    this.#signaling.on('frame', (frame) => this.#onFrame(frame));
    this.#signaling.on('connection', (detail) => {
      if (detail.state === 'connecting' || (detail.state === 'reconnecting' && this.#state === 'idle')) this.#state = 'connecting';
      this.emit('connection', detail);
    });
    this.#signaling.on('ended', (detail) => this.#onEnded(detail));
    this.#mesh.on('peer', ({ id, link }) => this.emit('remote_stream', { participantId: id, stream: link.remoteStream }));
    this.#mesh.on('peer-state', ({ id, state }) => this.emit('peer_state', { participantId: id, state }));
    this.#mesh.setTrack('audio', this.#track('audio'));
    this.#mesh.setTrack('video', this.#track('video'));
  }

  /** Connects and joins; reconnects by itself until the visit is over for this page. */
  join() {
    this.#signaling.start();
    return this;
  }

  /** Leaves for good (no grace period): `ended` {outcome: 'left'} follows. */
  leave() {
    this.#signaling.leave();
  }

  /** 'idle' | 'connecting' | 'waiting' | 'admitted' | 'ended' */
  get state() {
    return this.#state;
  }

  /** Whether frames can be sent right now (joined, socket open). */
  get connected() {
    return this.#signaling.connected;
  }

  /** The token's claims, decoded but not verified (role, name, visit, ...), or null. */
  get claims() {
    return this.#claims;
  }

  /** Ourselves once joined: {participant_id, role, name}; null before. */
  get self() {
    return this.#self;
  }

  /** The visit from `joined`: {id, status}; null before. */
  get visit() {
    return this.#visit;
  }

  /** The other admitted participants, by participant id. */
  get participants() {
    return this.#participants;
  }

  /** The waiting room as the last `lobby` frame listed it (doctors only). */
  get waiting() {
    return this.#waiting;
  }

  /** Our own connection's class as the server last said it: {quality, reason?}, or null. */
  get quality() {
    return this.#quality;
  }

  /** The pre-call check's result once it ran: {camera, microphone, network, turn}, or null. */
  get precheck() {
    return this.#precheck;
  }

  /** The STUN/TURN servers the peer connections use. */
  get iceServers() {
    return this.#iceServers;
  }

  /** The participant `id` (ourselves, someone here, or someone who left), or null. */
  participant(id) {
    if (id === this.#self?.participant_id) return this.#self;
    return this.#participants.get(id) ?? this.#former.get(id) ?? null;
  }

  /** The stream arriving from participant `id`, or null. */
  remoteStream(id) {
    return this.#mesh.link(id)?.remoteStream ?? null;
  }

  /** The RTCPeerConnection to participant `id` (for getStats), or null. */
  peerConnection(id) {
    return this.#mesh.link(id)?.pc ?? null;
  }

  /** Sends any client frame; false if not connected. For frames without a method here. */
  send(frame) {
    return this.#signaling.send(frame);
  }

  chat(text) {
    return this.send({ type: 'chat', text });
  }

  admit(participantId) {
    return this.send({ type: 'admit', participant_id: participantId });
  }

  deny(participantId, reason) {
    return this.send({ type: 'deny', participant_id: participantId, ...(reason ? { reason } : {}) });
  }

  remove(participantId) {
    return this.send({ type: 'remove', participant_id: participantId });
  }

  endVisit() {
    return this.send({ type: 'end_visit' });
  }

  /** Doctors: asks for a guest link for this visit; the answer is an `invite_link` event. */
  invite(name) {
    return this.send({ type: 'invite', role: 'guest', name });
  }

  /** Agrees to the consent text of `consent_required` (its `version`); then we wait. */
  consent(version) {
    return this.send({ type: 'consent', version });
  }

  // ---- our own media ----

  /** The local stream (camera and microphone) this page sends. */
  get localStream() {
    return this.#stream;
  }

  /** What the others are told: microphone on, camera on, sharing a screen. */
  get media() {
    return {
      audio: Boolean(this.#track('audio')) && this.#wanted.audio,
      video: Boolean(this.#track('video')) && this.#wanted.video,
      screen: Boolean(this.#screen),
    };
  }

  /** Turns the microphone and/or camera on or off (`track.enabled`: no renegotiation). */
  setMedia({ audio, video } = {}) {
    if (audio !== undefined) this.#wanted.audio = Boolean(audio);
    if (video !== undefined) this.#wanted.video = Boolean(video);
    this.#mediaChanged();
    return this.media;
  }

  /**
   * Replaces the local track of `kind` (another camera or microphone) in the local stream
   * and on every peer connection; returns the previous track, which the caller may stop.
   */
  setTrack(kind, track) {
    const old = this.#track(kind);
    if (old) this.#stream.removeTrack(old);
    if (track) this.#stream.addTrack(track);
    // While a screen is shared the camera waits in the local stream for its turn.
    if (!(kind === 'video' && this.#screen)) this.#mesh.setTrack(kind, track);
    this.#mediaChanged();
    return old;
  }

  /** Asks for a screen, window or tab and sends it instead of the camera; false if cancelled. */
  async shareScreen() {
    if (this.#screen) return true;
    const track = await openScreen();
    if (!track) return false;
    this.#screen = track;
    // The browser's own "Stop sharing" bar ends the track without our say.
    track.addEventListener('ended', () => this.stopScreenShare());
    this.#mesh.setTrack('video', track);
    this.#mediaChanged();
    return true;
  }

  stopScreenShare() {
    if (!this.#screen) return;
    this.#screen.stop();
    this.#screen = null;
    this.#mesh.setTrack('video', this.#track('video'));
    this.#mediaChanged();
  }

  #track(kind) {
    return (kind === 'audio' ? this.#stream.getAudioTracks() : this.#stream.getVideoTracks())[0] ?? null;
  }

  #mediaChanged() {
    for (const kind of ['audio', 'video']) {
      const track = this.#track(kind);
      if (track) track.enabled = this.#wanted[kind];
    }
    this.#sendMedia();
    this.emit('local_media', this.media);
  }

  #sendMedia() {
    this.send({ type: 'media', ...this.media });
  }

  // ---- frames ----

  #onFrame(frame) {
    switch (frame.type) {
      case 'joined':
        this.#self = { participant_id: frame.participant_id, role: frame.role, name: this.#claims?.name };
        this.#visit = frame.visit ?? null;
        this.#setIceServers(frame.ice_servers);
        // The server knows nothing of our media after a new join: say it every time.
        this.#sendMedia();
        break;
      case 'waiting':
        // Also reached after a reconnect that came too late to keep our place.
        this.#mesh.closeAll();
        for (const [id, p] of this.#participants) this.#former.set(id, p);
        this.#participants.clear();
        this.#state = 'waiting';
        this.#setIceServers(frame.ice_servers);
        this.#stopStats();
        this.#runPrecheck();
        break;
      case 'admitted': {
        this.#setIceServers(frame.ice_servers);
        const here = (frame.participants ?? []).filter((p) => p.participant_id !== this.#self?.participant_id);
        this.#participants = new Map(here.map((p) => [p.participant_id, p]));
        const ids = [...this.#participants.keys()];
        this.#mesh.retain(ids);
        this.#mesh.connectTo(ids);
        // After a reconnect, messages sent while we were away may be lost: re-offer, and
        // restart ICE where the media path broke meanwhile.
        this.#mesh.resync();
        this.#state = 'admitted';
        this.#startStats();
        break;
      }
      case 'quality':
        this.#quality = { quality: frame.quality, ...(frame.reason ? { reason: frame.reason } : {}) };
        break;
      case 'lobby':
        this.#waiting = frame.waiting ?? [];
        break;
      case 'participant_joined':
        this.#participants.set(frame.participant.participant_id, frame.participant);
        this.#mesh.connectTo([frame.participant.participant_id]);
        break;
      case 'participant_updated': {
        const p = frame.participant;
        const before = this.#participants.get(p.participant_id);
        if (!before && p.state !== 'admitted') break;
        this.#participants.set(p.participant_id, p);
        if (!before) this.#mesh.connectTo([p.participant_id]);
        // Their signaling was down: whatever we sent meanwhile was dropped.
        if (before?.connected === false && p.connected !== false) this.#mesh.resync(p.participant_id);
        break;
      }
      case 'participant_left': {
        const p = this.#participants.get(frame.participant_id);
        if (p) this.#former.set(frame.participant_id, p);
        this.#participants.delete(frame.participant_id);
        this.#mesh.drop(frame.participant_id);
        break;
      }
      case 'signal':
        this.#mesh.receive(frame);
        break;
    }
    this.emit('frame', frame);
    this.emit(frame.type, frame);
  }

  #setIceServers(list) {
    if (!Array.isArray(list)) return;
    this.#iceServers = list;
    this.#mesh.updateIceServers();
  }

  // ---- call quality ----

  #startStats() {
    if (this.#statsTimer) return;
    this.#statsTimer = setInterval(() => this.#sendStats(), STATS_INTERVAL_MS);
  }

  #stopStats() {
    clearInterval(this.#statsTimer);
    this.#statsTimer = 0;
    this.#statsSnapshots.clear();
  }

  async #sendStats() {
    const peers = [];
    for (const id of this.#participants.keys()) {
      const pc = this.peerConnection(id);
      if (!pc || pc.connectionState === 'closed') continue;
      try {
        const { entry, snapshot } = await readPeer(pc, this.#statsSnapshots.get(pc));
        this.#statsSnapshots.set(pc, snapshot);
        peers.push(entry);
      } catch {
        // A connection closed while being read: it has nothing more to say.
      }
    }
    // Connections that are gone are forgotten with their counters.
    const live = new Set([...this.#participants.keys()].map((id) => this.peerConnection(id)));
    for (const pc of this.#statsSnapshots.keys()) if (!live.has(pc)) this.#statsSnapshots.delete(pc);
    if (peers.length && this.#state === 'admitted') this.send({ type: 'stats', peers: peers.slice(0, 7) });
  }

  /** Checks the network once per page (again only if it could not be sent). */
  #runPrecheck() {
    if (!this.#checkNetwork || this.#precheckRun) return;
    this.#precheckRun = this.#checkNetwork(this.#iceServers)
      .catch(() => ({ network: 'blocked', turn: {} }))
      .then((net) => {
        const result = {
          camera: this.#stream.getVideoTracks().length > 0,
          microphone: this.#stream.getAudioTracks().length > 0,
          ...net,
        };
        this.#precheck = result;
        this.emit('precheck', result);
        if (this.#state === 'waiting' && !this.send({ type: 'precheck', ...result })) this.#precheckRun = null;
      });
  }

  #onEnded(detail) {
    this.#stopStats();
    this.#state = 'ended';
    this.#mesh.closeAll();
    if (this.#screen) {
      this.#screen.stop();
      this.#screen = null;
    }
    this.emit('ended', detail);
  }
}
