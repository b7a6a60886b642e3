// One RTCPeerConnection to one remote participant, negotiated with the W3C "perfect
// negotiation" pattern: both sides may offer whenever they need to; when offers cross,
// the polite side rolls back and takes the other's, the impolite side ignores the
// incoming one. So neither side has to know who "calls" whom, and glare cannot deadlock.
//
// Every message this link sends is wrapped in an envelope (Bedside relays it untouched):
//   {pc, to_pc, description} | {pc, to_pc, candidate} | {pc, to_pc, hello: true}
// `pc` is a random id of the sending RTCPeerConnection and `to_pc` the receiver's id as
// far as the sender knows it. With them a page can tell "the other side renegotiates"
// from "the other side is a new peer connection" (it reloaded, or dropped its old one),
// and drop late messages meant for a connection that no longer exists.

import { Emitter } from './emitter.js';

// How long ICE may stay "disconnected" before we restart it rather than wait for it to
// recover by itself or be declared "failed" (which takes Chrome up to 30 s).
const DISCONNECTED_GRACE_MS = 4000;
// Both sides notice a broken path at about the same moment. The impolite side restarts ICE
// at once; the polite side only if nothing has happened after this much longer, so the
// two restart offers normally don't cross (see #onDescription for why that matters).
const POLITE_RESTART_DELAY_MS = 5000;
// The polite side leaves the first offer to the other side for this long. When both first
// offers cross and the polite one is rolled back while its setLocalDescription is still
// running, Chromium (seen in 148) never gathers a candidate for the answer, and ICE stays
// "new" on both sides. Answering instead sends our tracks just as well (transceivers added
// with addTrack attach to the offer's sections). If no offer comes (the other side has
// nothing to send), we offer after all.
const POLITE_FIRST_OFFER_WAIT_MS = 1500;
// A negotiated connection that has not connected after this long is restarted: candidates
// can get lost (a signaling gap, a browser gathering bug) and nothing else would notice.
const CONNECT_TIMEOUT_MS = 8000;

export class PeerLink extends Emitter {
  #send;
  #makingOffer = false;
  #ignoreOffer = false;
  #settingRemoteAnswer = false;
  #restartTimer = 0;
  #connectTimer = 0;
  #firstOfferDeferred = false;
  #firstOfferTimer = 0;
  #connectStrikes = 0;

  /**
   * @param {object} o
   * @param {string} o.remoteId      the other participant's id
   * @param {boolean} o.polite       whether this side yields when offers collide
   * @param {RTCIceServer[]} o.iceServers  from `joined` (or `admitted`)
   * @param {(data: object) => boolean} o.send  relays `data` to the other participant
   * @param {string|null} o.remotePc  the remote connection's id, if already known
   */
  constructor({ remoteId, polite, iceServers, send, remotePc = null }) {
    super();
    this.remoteId = remoteId;
    this.polite = polite;
    this.id = randomId();
    this.remotePc = remotePc;
    this.remoteStream = new MediaStream();
    this.#send = send;
    this.pc = new RTCPeerConnection({ iceServers });
    this.pc.addEventListener('negotiationneeded', () => this.#offer());
    // Trickle ICE: each candidate goes out as soon as it is found.
    this.pc.addEventListener('icecandidate', ({ candidate }) => {
      if (candidate) this.#signal({ candidate: candidate.toJSON() });
    });
    this.pc.addEventListener('track', ({ track }) => {
      this.remoteStream.addTrack(track);
      this.emit('track', { track });
    });
    this.pc.addEventListener('connectionstatechange', () => this.#onConnectionState());
    this.pc.addEventListener('signalingstatechange', () => this.#watchConnect());
    // Tell the other side a fresh connection exists, even if we have nothing to send:
    // it may be holding a connection to our predecessor (before a reload) that it must
    // replace before either side can negotiate again.
    this.#signal({ hello: true });
  }

  get connectionState() {
    return this.pc.connectionState;
  }

  /**
   * Whether `data` comes from a fresh remote connection replacing the one this link talks
   * to. Only a message that names no receiver (`to_pc` null: its sender knows nothing of
   * us yet) counts; a reply addressed to some connection of ours never does, so two
   * pages can never keep replacing their links in answer to each other.
   */
  isFromNewRemote(data) {
    return Boolean(this.remotePc && data?.pc && data.pc !== this.remotePc && !data.to_pc);
  }

  /** Handles one relayed message from the other participant. */
  async receive(data) {
    if (!data || typeof data !== 'object' || typeof data.pc !== 'string') return;
    // Meant for an earlier connection of ours (before we replaced it): stale.
    if (data.to_pc && data.to_pc !== this.id) return;
    if (this.remotePc && data.pc !== this.remotePc) return;
    this.remotePc = data.pc;
    const { description, candidate } = data;
    try {
      if (description) {
        await this.#onDescription(description);
      } else if (candidate) {
        try {
          await this.pc.addIceCandidate(candidate);
        } catch (err) {
          // Candidates of an offer we chose to ignore fail to apply; that is expected.
          if (!this.#ignoreOffer) throw err;
        }
      }
    } catch (err) {
      this.emit('problem', { error: err });
    }
  }

  async #onDescription(description) {
    const pc = this.pc;
    // An answer we are applying right now leaves us "stable" in a moment, so an offer
    // arriving meanwhile is not a collision.
    const readyForOffer = !this.#makingOffer && (pc.signalingState === 'stable' || this.#settingRemoteAnswer);
    const collision = description.type === 'offer' && !readyForOffer;
    this.#ignoreOffer = !this.polite && collision;
    if (this.#ignoreOffer) return;
    // Chromium (seen in 148) resets the video send stream when it rolls back a re-offer
    // (not a first offer): the encoder stops for good while ICE and signaling look fine.
    // Re-attaching the same tracks once the collision is resolved restarts it.
    const rollsBackReoffer = collision && pc.remoteDescription !== null;
    this.#settingRemoteAnswer = description.type === 'answer';
    try {
      // For the polite side in a collision this rolls back our own offer implicitly.
      await pc.setRemoteDescription(description);
    } finally {
      this.#settingRemoteAnswer = false;
    }
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this.#signal({ description: pc.localDescription.toJSON() });
    }
    if (rollsBackReoffer) {
      for (const sender of pc.getSenders()) {
        if (sender.track) sender.replaceTrack(sender.track).catch((error) => this.emit('problem', { error }));
      }
    }
  }

  async #offer() {
    if (this.polite && !this.pc.remoteDescription && !this.#firstOfferDeferred) {
      this.#firstOfferDeferred = true;
      this.#firstOfferTimer = setTimeout(() => {
        // signalingState first: Firefox throws on reading a closed connection's descriptions.
        if (this.pc.signalingState === 'stable' && !this.pc.remoteDescription) this.#offer();
      }, POLITE_FIRST_OFFER_WAIT_MS);
      return;
    }
    try {
      this.#makingOffer = true;
      // Without arguments this creates whatever the state calls for (offer, or the
      // ICE-restart offer after restartIce()).
      await this.pc.setLocalDescription();
      this.#signal({ description: this.pc.localDescription.toJSON() });
    } catch (err) {
      this.emit('problem', { error: err });
    } finally {
      this.#makingOffer = false;
    }
  }

  /** After each completed negotiation: the connection must come up within CONNECT_TIMEOUT_MS. */
  #watchConnect() {
    const pc = this.pc;
    if (pc.signalingState !== 'stable' || !pc.remoteDescription || pc.connectionState === 'connected') return;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = setTimeout(() => {
      if (!this.#notUp()) return;
      // First an ICE restart; if even that does not connect, this RTCPeerConnection is
      // beyond repair (a gatherer that never produces a candidate stays that way) and the
      // mesh replaces it with a new one, which the other side follows.
      this.#connectStrikes += 1;
      if (this.#connectStrikes === 1) this.#scheduleRestart(0, () => this.#notUp());
      else this.emit('stuck', {});
    }, CONNECT_TIMEOUT_MS);
  }

  #onConnectionState() {
    const state = this.pc.connectionState;
    // A pending restart re-checks the state when it fires; only "connected" cancels it.
    if (state === 'connected') {
      clearTimeout(this.#restartTimer);
      clearTimeout(this.#connectTimer);
      this.#connectStrikes = 0;
    }
    if (state === 'failed') this.#scheduleRestart(0);
    else if (state === 'disconnected') this.#scheduleRestart(DISCONNECTED_GRACE_MS);
    this.emit('state', { state });
  }

  /** Restarts ICE after `delayMs` (more for the polite side) if `stillBad()` then. */
  #scheduleRestart(delayMs, stillBad = () => this.#broken()) {
    clearTimeout(this.#restartTimer);
    this.#restartTimer = setTimeout(
      () => {
        if (stillBad()) this.restartIce();
      },
      delayMs + (this.polite ? POLITE_RESTART_DELAY_MS : 0),
    );
  }

  #broken() {
    return this.pc.connectionState === 'failed' || this.pc.connectionState === 'disconnected';
  }

  #notUp() {
    return this.pc.connectionState === 'new' || this.pc.connectionState === 'connecting';
  }

  /** Restarts ICE: new candidates are gathered and a fresh offer is negotiated. */
  restartIce() {
    if (this.pc.signalingState === 'closed') return;
    this.pc.restartIce();
  }

  /**
   * Called when signaling is back (ours or theirs) after a gap, during which messages may
   * have been lost: re-sends an offer still waiting for its answer, and restarts ICE if
   * the media path broke meanwhile.
   */
  resync() {
    const pc = this.pc;
    if (pc.signalingState === 'closed') return;
    if (pc.signalingState === 'have-local-offer' && pc.localDescription) {
      this.#signal({ description: pc.localDescription.toJSON() });
    }
    if (this.#broken()) this.#scheduleRestart(0);
  }

  /**
   * Sends `track` (or nothing, for null) as this link's outgoing track of `kind`. Swapping
   * tracks on an existing sender (another camera, a screen share) needs no renegotiation.
   */
  setTrack(kind, track, stream) {
    const transceivers = this.pc.getTransceivers().filter((t) => !t.stopped && t.receiver.track.kind === kind);
    const sending = transceivers.find((t) => t.sender.track) ?? transceivers.find((t) => t.direction.includes('send'));
    if (sending) {
      sending.sender.replaceTrack(track).catch((error) => this.emit('problem', { error }));
      return;
    }
    if (!track) return;
    // A transceiver created by the other side's offer can carry our track too; reusing it
    // keeps the session at one audio and one video section.
    const idle = transceivers.find((t) => !t.sender.track);
    if (idle) {
      idle.sender.replaceTrack(track).catch((error) => this.emit('problem', { error }));
      idle.sender.setStreams?.(stream);
      idle.direction = 'sendrecv';
    } else {
      this.pc.addTrack(track, stream);
    }
  }

  /** New STUN/TURN servers (fresh TURN credentials): ICE uses them from its next restart on. */
  setIceServers(iceServers) {
    if (this.pc.signalingState === 'closed') return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
    } catch (error) {
      this.emit('problem', { error });
    }
  }

  close() {
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#firstOfferTimer);
    this.pc.close();
    for (const track of this.remoteStream.getTracks()) track.stop();
  }

  #signal(payload) {
    this.#send({ pc: this.id, to_pc: this.remotePc, ...payload });
  }
}

/** A random id that works outside secure contexts too (crypto.randomUUID does not). */
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
