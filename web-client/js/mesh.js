// The call as a mesh: one PeerLink to every other admitted participant, all sending the
// same local tracks. It follows the participant list the server sends (`admitted`,
// `participant_joined/updated/left`) and routes relayed `signal` frames to the right link.
//
// Events: `peer` {id, link} when a link is created or replaced (a tile should show its
// remoteStream), `peer-state` {id, state}, `peer-gone` {id}. A link that cannot connect
// even after an ICE restart is replaced by a new one.

import { PeerLink } from './peer.js';

export class Mesh extends EventTarget {
  #signaling;
  #links = new Map();
  #tracks = { audio: null, video: null };
  #stream = new MediaStream();

  constructor(signaling) {
    super();
    this.#signaling = signaling;
  }

  get selfId() {
    return this.#signaling.participantId;
  }

  /** The link to participant `id`, if any (tests and stats read it). */
  link(id) {
    return this.#links.get(id);
  }

  /** Sets the outgoing track of `kind` ('audio' | 'video') for every link, now and later. */
  setTrack(kind, track) {
    const old = this.#tracks[kind];
    if (old) this.#stream.removeTrack(old);
    if (track) this.#stream.addTrack(track);
    this.#tracks[kind] = track;
    for (const link of this.#links.values()) link.setTrack(kind, track, this.#stream);
  }

  /** Makes sure a link exists to each of `ids` (admitted participants other than us). */
  connectTo(ids) {
    for (const id of ids) if (id !== this.selfId && !this.#links.has(id)) this.#create(id);
  }

  /** Keeps only links to `ids`: used after our own re-admission, which lists who is here. */
  retain(ids) {
    const keep = new Set(ids);
    for (const id of [...this.#links.keys()]) if (!keep.has(id)) this.drop(id);
  }

  drop(id) {
    const link = this.#links.get(id);
    if (!link) return;
    this.#links.delete(id);
    link.close();
    this.#emit('peer-gone', { id });
  }

  /** Signaling came back after a gap (ours, or the other side's if `id` is given). */
  resync(id) {
    if (id) this.#links.get(id)?.resync();
    else for (const link of this.#links.values()) link.resync();
  }

  /** A relayed `signal` frame. */
  receive({ from, data }) {
    let link = this.#links.get(from);
    if (link?.isFromNewRemote(data)) {
      // The other side started over with a new connection (e.g. reloaded the page):
      // ours belongs to its predecessor and can never negotiate with the new one.
      this.drop(from);
      link = undefined;
    }
    if (!link) {
      // Addressed to a connection of ours that is gone: a late message, nothing to do.
      if (data?.to_pc) return;
      link = this.#create(from, data?.pc ?? null);
    }
    link.receive(data);
  }

  closeAll() {
    for (const id of [...this.#links.keys()]) this.drop(id);
  }

  #create(id, remotePc = null) {
    const link = new PeerLink({
      remoteId: id,
      // A fixed rule both sides compute the same way: the smaller id is the polite peer.
      polite: this.selfId < id,
      iceServers: this.#signaling.iceServers,
      remotePc,
      send: (data) => this.#signaling.send({ type: 'signal', to: id, data }),
    });
    link.addEventListener('state', (e) => this.#emit('peer-state', { id, state: e.detail.state }));
    link.addEventListener('stuck', () => {
      if (this.#links.get(id) !== link) return;
      // A fresh connection announces itself with to_pc null, so the other side replaces
      // its end too and both negotiate from scratch.
      this.drop(id);
      this.#create(id);
    });
    // Only the error's name: WebRTC error messages can quote SDP, which holds addresses.
    link.addEventListener('problem', (e) => console.warn('bedside: peer connection problem:', e.detail.error?.name ?? 'Error'));
    this.#links.set(id, link);
    for (const kind of ['audio', 'video']) {
      if (this.#tracks[kind]) link.setTrack(kind, this.#tracks[kind], this.#stream);
    }
    this.#emit('peer', { id, link });
    return link;
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
