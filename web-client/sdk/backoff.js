// Reconnect delays for the signaling socket: exponential backoff with jitter.
//
// Jitter matters when a server restart drops every client at once: without it they would
// all come back in the same millisecond, again and again.

/** Delay in ms before reconnect attempt `attempt` (0 for the first retry). */
export function backoffDelay(attempt, { baseMs = 500, capMs = 10_000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  // "Equal jitter": half fixed, half random, so a retry never fires immediately.
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
