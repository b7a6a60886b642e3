// The call as a mesh: one PeerLink to every other admitted participant, all sending the
// same local tracks. The Visit tells it who is here (from `admitted`,
// `participant_joined/updated/left`) and hands it the relayed `signal` frames.
//
// Events: `peer` {id, link} when a link is created or replaced (a tile should show its
// remoteStream), `peer-state` {id, state}, `peer-gone` {id}. A link that cannot connect
// even after an ICE restart is replaced by a new one.

import { Emitter } from './emitter.js';
import { PeerLink } from './peer.js';

export class Mesh extends Emitter {
  #selfId;
  #iceServers;
  #send;
  #links = new Map();
  #tracks = { audio: null, video: null };
  #stream = new MediaStream();

  /**
   * @param {object} o
   * @param {() => string} o.selfId  our participant id
   * @param {() => RTCIceServer[]} o.iceServers  the STUN/TURN servers to use now
   * @param {(to: string, data: object) => boolean} o.send  relays `data` to participant `to`
   */
  constructor({ selfId, iceServers, send }) {
    super();
    this.#selfId = selfId;
    this.#iceServers = iceServers;
    this.#send = send;
  }

  /** The link to participant `id`, if any. */
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

  /** The servers changed (TURN credentials handed out on admission): tell every link. */
  updateIceServers() {
    for (const link of this.#links.values()) link.setIceServers(this.#iceServers());
  }

  /** Makes sure a link exists to each of `ids` (admitted participants other than us). */
  connectTo(ids) {
    for (const id of ids) if (id !== this.#selfId() && !this.#links.has(id)) this.#create(id);
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
    this.emit('peer-gone', { id });
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
      polite: this.#selfId() < id,
      iceServers: this.#iceServers(),
      remotePc,
      send: (data) => this.#send(id, data),
    });
    link.on('state', ({ state }) => this.emit('peer-state', { id, state }));
    link.on('stuck', () => {
      if (this.#links.get(id) !== link) return;
      // A fresh connection announces itself with to_pc null, so the other side replaces
      // its end too and both negotiate from scratch.
      this.drop(id);
      this.#create(id);
    });
    // Only the error's name: WebRTC error messages can quote SDP, which holds addresses.
    link.on('problem', ({ error }) => console.warn('bedside: peer connection problem:', error?.name ?? 'Error'));
    this.#links.set(id, link);
    for (const kind of ['audio', 'video']) {
      if (this.#tracks[kind]) link.setTrack(kind, this.#tracks[kind], this.#stream);
    }
    this.emit('peer', { id, link });
    return link;
  }
}
