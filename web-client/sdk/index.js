// Bedside's client SDK: everything a page needs to take part in a Bedside video visit,
// as plain ES modules with no dependency and no build step. Types: index.d.ts. Guide:
// docs/sdk.md.

export { Visit } from './visit.js';
export { Dashboard } from './dashboard.js';
export { Emitter } from './emitter.js';
export { Signaling, finalOutcome } from './signaling.js';
export { backoffDelay } from './backoff.js';
export { classifyMediaError, listDevices, openLocalMedia, openScreen, stopStream } from './media.js';
export { readClaims, takeToken } from './token.js';
