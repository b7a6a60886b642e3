// The event plumbing every SDK object shares: a standard EventTarget whose events carry
// their payload in `detail`, plus `on`/`once` for listeners that only want the payload.
// A listener that throws does not stop the others (EventTarget reports it and goes on).

export class Emitter extends EventTarget {
  /** Calls `listener(detail)` for every `type` event; returns a function that stops it. */
  on(type, listener) {
    const wrapped = (event) => listener(event.detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /** The detail of the next `type` event. */
  once(type) {
    return new Promise((resolve) => this.addEventListener(type, (event) => resolve(event.detail), { once: true }));
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
