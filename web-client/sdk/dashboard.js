// A provider's dashboard: the /ws connection a provider token opens (docs/protocol.md, "The
// provider's dashboard"). No visit and no WebRTC: the provider's queue across their visits
// (`queue`, kept in `entries`), how they show to their waiting patients (`setPresence`),
// messages to waiting rooms (`notify`), and `take`, answered with a doctor token for one
// visit (`visit_token`), which a Visit joins on a second socket. Reconnects like a Visit.

import { Emitter } from './emitter.js';
import { Signaling } from './signaling.js';

export class Dashboard extends Emitter {
  #signaling;
  #entries = [];
  #presence = null;
  #chosen = null;
  #provider = null;
  #name = null;

  constructor({ token, url }) {
    super();
    this.#signaling = new Signaling(url ? { token, url } : { token });
    this.#signaling.on('frame', (frame) => this.#onFrame(frame));
    this.#signaling.on('connection', (detail) => this.emit('connection', detail));
    this.#signaling.on('ended', (detail) => this.emit('ended', detail));
  }

  /** Connects; reconnects by itself until `ended` (another tab took over: `replaced`). */
  join() {
    this.#signaling.start();
    return this;
  }

  leave() {
    this.#signaling.leave();
  }

  get connected() {
    return this.#signaling.connected;
  }

  /** The provider's identity and name, from `joined`. */
  get provider() {
    return this.#provider;
  }

  get name() {
    return this.#name;
  }

  /** The queue from the last `queue` frame: oldest knock first. */
  get entries() {
    return this.#entries;
  }

  /** How the provider shows to waiting patients (null until the server said). */
  get presence() {
    return this.#presence;
  }

  /** What the provider chose (`available`, `busy`, `away`). */
  get chosen() {
    return this.#chosen;
  }

  send(frame) {
    return this.#signaling.send(frame);
  }

  setPresence(status) {
    return this.send({ type: 'presence', status });
  }

  /** A message to the waiting patients of one visit, or of all the provider's visits. */
  notify(text, visitId) {
    return this.send({ type: 'notify', text, ...(visitId ? { visit_id: visitId } : {}) });
  }

  /** Asks for a doctor token to see a visit's patient: a `visit_token` event answers. */
  take(visitId) {
    return this.send({ type: 'take', visit_id: visitId });
  }

  #onFrame(frame) {
    if (frame.type === 'joined') {
      this.#provider = frame.provider ?? null;
      this.#name = frame.name ?? null;
    } else if (frame.type === 'queue') {
      this.#entries = Array.isArray(frame.entries) ? frame.entries : [];
      this.#presence = frame.presence ?? this.#presence;
      this.#chosen = frame.chosen ?? this.#chosen;
    }
    this.emit('frame', frame);
    this.emit(frame.type, frame);
  }
}
