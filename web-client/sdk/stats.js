// Call quality as this browser sees it: each peer connection's `getStats()` reduced to one
// entry of a `stats` frame (docs/protocol.md, "Call quality"), and the pre-call network check.
//
// Rates and loss are over the interval since the previous reading of the same connection,
// so a reading keeps the counters it needs (`snapshot`). Candidates are described by type
// only: no address or port is ever read into an entry.

const clamp = (v, max) => (Number.isFinite(v) ? Math.min(max, Math.max(0, v)) : null);
const round = (v, places = 1) => (v === null ? null : Math.round(v * 10 ** places) / 10 ** places);

/**
 * One peer connection's entry for a `stats` frame, and the counters to pass back next time.
 * @param {RTCPeerConnection} pc
 * @param {object} [previous] the `snapshot` of the previous reading of this connection
 */
export async function readPeer(pc, previous = {}) {
  const report = await pc.getStats();
  const all = [...report.values()];
  const snapshot = {};
  const rate = (id, bytes, at) => {
    snapshot[id] = { ...snapshot[id], bytes, at };
    const before = previous[id];
    if (!before || !(at > before.at) || bytes < before.bytes) return null;
    return ((bytes - before.bytes) * 8) / (at - before.at); // bits per ms = kbit/s
  };
  const lossOver = (id, lost, received) => {
    snapshot[id] = { ...snapshot[id], lost, received };
    const before = previous[id];
    if (!before || before.lost === undefined) return null;
    const dLost = Math.max(0, lost - before.lost);
    const dReceived = Math.max(0, received - before.received);
    return dLost + dReceived > 0 ? dLost / (dLost + dReceived) : null;
  };
  const worst = (a, b) => (a === null ? b : b === null ? a : Math.max(a, b));

  const inbound = { loss: null, audio_kbps: null, video_kbps: null, fps: null, width: null, height: null };
  const outbound = { loss: null, audio_kbps: null, video_kbps: null, fps: null, width: null, height: null, limitation: null };
  let jitter = null;
  let rtt = null;
  for (const s of all) {
    if (s.type === 'inbound-rtp') {
      inbound.loss = worst(inbound.loss, lossOver(s.id, s.packetsLost ?? 0, s.packetsReceived ?? 0));
      if (s.jitter !== undefined) jitter = worst(jitter, s.jitter * 1000);
      const kbps = rate(s.id, s.bytesReceived ?? 0, s.timestamp);
      if (s.kind === 'audio') inbound.audio_kbps = kbps;
      if (s.kind === 'video') {
        inbound.video_kbps = kbps;
        inbound.fps = s.framesPerSecond ?? null;
        inbound.width = s.frameWidth ?? null;
        inbound.height = s.frameHeight ?? null;
      }
    } else if (s.type === 'outbound-rtp') {
      const kbps = rate(s.id, s.bytesSent ?? 0, s.timestamp);
      if (s.kind === 'audio') outbound.audio_kbps = kbps;
      if (s.kind === 'video') {
        outbound.video_kbps = kbps;
        outbound.fps = s.framesPerSecond ?? null;
        outbound.width = s.frameWidth ?? null;
        outbound.height = s.frameHeight ?? null;
        if (s.qualityLimitationReason) outbound.limitation = s.qualityLimitationReason;
      }
    } else if (s.type === 'remote-inbound-rtp') {
      // What the other side received of ours, from its receiver reports.
      if (Number.isFinite(s.fractionLost)) outbound.loss = worst(outbound.loss, s.fractionLost);
      if (Number.isFinite(s.roundTripTime)) rtt ??= s.roundTripTime * 1000;
    }
  }

  const pair = selectedPair(report, all);
  if (pair && Number.isFinite(pair.currentRoundTripTime)) rtt = pair.currentRoundTripTime * 1000;
  const local = pair && report.get(pair.localCandidateId);
  const remote = pair && report.get(pair.remoteCandidateId);
  const TYPES = ['host', 'srflx', 'prflx', 'relay'];
  const typed = local && remote && TYPES.includes(local.candidateType) && TYPES.includes(remote.candidateType);

  const flow = (f, { limitation } = {}) => ({
    loss: round(clamp(f.loss, 1), 4),
    audio_kbps: round(clamp(f.audio_kbps, 100_000)),
    video_kbps: round(clamp(f.video_kbps, 100_000)),
    fps: round(clamp(f.fps, 240)),
    width: f.width === null ? null : Math.round(clamp(f.width, 8192)),
    height: f.height === null ? null : Math.round(clamp(f.height, 8192)),
    ...(limitation !== undefined ? { limitation: ['none', 'bandwidth', 'cpu', 'other'].includes(limitation) ? limitation : null } : {}),
  });
  const entry = {
    rtt_ms: round(clamp(rtt, 60_000)),
    jitter_ms: round(clamp(jitter, 60_000)),
    inbound: flow(inbound),
    outbound: flow(outbound, { limitation: outbound.limitation }),
    pair: typed
      ? {
          local: local.candidateType,
          remote: remote.candidateType,
          protocol: local.protocol === 'tcp' ? 'tcp' : 'udp',
          ...(local.candidateType === 'relay' && ['udp', 'tcp', 'tls'].includes(local.relayProtocol) ? { relay_protocol: local.relayProtocol } : {}),
        }
      : null,
  };
  return { entry, snapshot };
}

function selectedPair(report, all) {
  for (const s of all) {
    if (s.type === 'transport' && s.selectedCandidatePairId) return report.get(s.selectedCandidatePairId) ?? null;
  }
  // Firefox marks the pair itself.
  return all.find((s) => s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) ?? null;
}

/**
 * The pre-call network check: gathers ICE candidates with `iceServers` and says what a call
 * from this network can use: `direct` (a server-reflexive candidate, or a host one when no
 * STUN/TURN server is configured), `relay` (only a TURN relay) or `blocked`; `turn` says which
 * configured TURN transports allocated a relay.
 * @param {RTCIceServer[]} iceServers
 * @param {{timeoutMs?: number}} [o]
 */
export async function checkNetwork(iceServers, { timeoutMs = 8000 } = {}) {
  const urls = (iceServers ?? []).flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls])).filter(Boolean);
  const transportOf = (url) => (url.startsWith('turns:') ? 'tls' : /transport=tcp/i.test(url) ? 'tcp' : 'udp');
  const turnTried = new Set(urls.filter((u) => /^turns?:/.test(u)).map(transportOf));
  const types = new Set();
  const relayed = new Set();
  let pc = null;
  try {
    // A configuration the browser refuses gathers nothing: blocked, as far as a call goes.
    pc = new RTCPeerConnection({ iceServers: iceServers ?? [] });
    pc.createDataChannel('precheck');
    const done = new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      pc.addEventListener('icecandidate', ({ candidate }) => {
        if (!candidate) {
          clearTimeout(timer);
          resolve();
          return;
        }
        if (candidate.type) types.add(candidate.type);
        if (candidate.type === 'relay') {
          // Which transport reached the TURN server (Chromium names it; otherwise the
          // candidate's own protocol says udp or tcp).
          const via = candidate.relayProtocol ?? (candidate.protocol === 'tcp' ? 'tcp' : 'udp');
          relayed.add(via);
        }
      });
    });
    await pc.setLocalDescription(await pc.createOffer());
    await done;
  } catch {
    // Nothing more was gathered.
  } finally {
    pc?.close();
  }
  const turn = {};
  for (const t of turnTried) turn[t] = relayed.has(t);
  let network = 'blocked';
  if (types.has('srflx') || (types.has('host') && urls.length === 0)) network = 'direct';
  else if (types.has('relay')) network = 'relay';
  return { network, turn };
}
