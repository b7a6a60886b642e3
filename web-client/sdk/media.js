// Local media: opening the camera and microphone with per-device fallback, sorting what
// went wrong into a few cases a page can explain, listing devices, and screen capture.

/** Why a device could not be opened, as one of a few cases the UI explains. */
export function classifyMediaError(err) {
  switch (err?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return 'denied';
    case 'NotFoundError':
    case 'OverconstrainedError':
    case 'DevicesNotFoundError':
      return 'missing';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'busy';
    default:
      return 'unknown';
  }
}

/**
 * Opens camera and microphone. If asking for both fails, each is tried alone, so a
 * patient with a working microphone but a missing or busy camera can still be heard.
 * Returns {stream, problems: {audio?, video?}} where a problem is a classifyMediaError case.
 */
export async function openLocalMedia({ audioId, videoId } = {}) {
  if (!navigator.mediaDevices?.getUserMedia) {
    return { stream: new MediaStream(), problems: { audio: 'insecure', video: 'insecure' } };
  }
  const constraints = {
    audio: audioId ? { deviceId: { exact: audioId } } : true,
    video: {
      ...(videoId ? { deviceId: { exact: videoId } } : { facingMode: 'user' }),
      width: { ideal: 1280 },
      height: { ideal: 720 },
    },
  };
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraints), problems: {} };
  } catch (both) {
    // Denied means denied for both; asking twice more would only repeat the refusal.
    if (classifyMediaError(both) === 'denied') return { stream: new MediaStream(), problems: { audio: 'denied', video: 'denied' } };
  }
  const stream = new MediaStream();
  const problems = {};
  for (const kind of ['audio', 'video']) {
    try {
      const single = await navigator.mediaDevices.getUserMedia({ [kind]: constraints[kind] });
      for (const track of single.getTracks()) stream.addTrack(track);
    } catch (err) {
      problems[kind] = classifyMediaError(err);
    }
  }
  return { stream, problems };
}

/** Cameras and microphones, for the pickers. Labels are empty until permission is granted. */
export async function listDevices() {
  const devices = (await navigator.mediaDevices?.enumerateDevices?.()) ?? [];
  return {
    cameras: devices.filter((d) => d.kind === 'videoinput'),
    microphones: devices.filter((d) => d.kind === 'audioinput'),
  };
}

/** A screen, window or tab chosen by the user, as a video track; null if they cancelled. */
export async function openScreen() {
  if (!navigator.mediaDevices?.getDisplayMedia) return null;
  try {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    return stream.getVideoTracks()[0] ?? null;
  } catch {
    return null;
  }
}

export function stopStream(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}
