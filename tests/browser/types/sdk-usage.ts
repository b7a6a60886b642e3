// Code a clinic's developer would write against the SDK's declarations. It is compiled,
// never run: tsc must accept every line, and must reject each line marked
// `@ts-expect-error` (a mistake the declarations are there to catch).

import {
  Dashboard,
  Visit,
  Signaling,
  backoffDelay,
  classifyMediaError,
  finalOutcome,
  listDevices,
  openLocalMedia,
  readClaims,
  stopStream,
  takeToken,
  type EndedEvent,
  type Outcome,
  type Participant,
  type ServerFrame,
} from '../../../web-client/sdk/index.js';

export async function customPage(video: HTMLVideoElement, log: HTMLElement): Promise<EndedEvent> {
  const token = takeToken();
  if (!token) throw new Error('no link');
  const claims = readClaims(token);
  const isDoctor = claims?.role === 'doctor';

  const { stream, problems } = await openLocalMedia();
  if (problems.video === 'denied') console.info('camera blocked');
  const visit = new Visit({ token, stream });

  visit.on('joined', ({ participant_id, visit: summary, ice_servers }) => {
    console.info(participant_id.length, summary.status, ice_servers.length);
  });
  visit.on('waiting', ({ position, expected_wait_secs, provider }) => {
    if (position !== undefined) console.info(position, expected_wait_secs ?? 0, provider?.presence);
  });
  visit.on('admitted', ({ participants }) => participants.forEach((p: Participant) => console.info(p.media.audio)));
  visit.on('lobby', ({ waiting }) => {
    if (isDoctor && waiting[0]) visit.admit(waiting[0].participant_id);
  });
  visit.on('participant_left', ({ participant_id, reason }) => console.info(participant_id, reason === 'timed_out'));
  visit.on('remote_stream', ({ participantId, stream: remote }) => {
    video.srcObject = remote;
    console.info(visit.participant(participantId)?.name);
  });
  visit.on('peer_state', ({ state }) => state === 'failed');
  visit.on('chat', ({ from, text, at }) => log.append(`${visit.participant(from)?.name}: ${text} ${at}`));
  visit.on('connection', ({ state, delayMs }) => console.info(state, delayMs));
  visit.on('local_media', ({ audio, video: camera, screen }) => console.info(audio, camera, screen));
  visit.on('error', ({ code }) => code === 'access_revoked');
  visit.on('consent_required', ({ version }) => visit.send({ type: 'consent', version }));
  visit.on('provider_message', ({ text }) => log.append(text));
  // A frame type this version does not know yet arrives as a ServerFrame.
  const off = visit.on('some_future_frame', (frame: ServerFrame) => console.info(frame.type, frame['field']));
  off();
  visit.on('frame', (frame) => console.info(frame.type));

  visit.join();
  visit.setMedia({ audio: false });
  const previous = visit.setTrack('video', stream.getVideoTracks()[0] ?? null);
  previous?.stop();
  if (await visit.shareScreen()) visit.stopScreenShare();
  const sent: boolean = visit.chat('hello');
  console.info(sent, visit.state, visit.media.screen, visit.participants.size, visit.self?.participant_id);
  const pc = visit.peerConnection('p_0123456789abcdef');
  if (pc) await pc.getStats();

  // @ts-expect-error: chat frames have no `name` field
  visit.on('chat', ({ name }) => name);
  // @ts-expect-error: a Visit needs a token
  new Visit({ stream });
  // @ts-expect-error: setMedia takes booleans
  visit.setMedia({ audio: 'off' });
  // @ts-expect-error: a participant's media state is read-only from the server
  visit.on('admitted', ({ participants }) => participants[0]?.media.foo);
  // @ts-expect-error: state is read-only
  visit.state = 'admitted';

  const ended = await visit.once('ended');
  const outcome: Outcome = ended.outcome;
  console.info(outcome, ended.code, finalOutcome(4003, { denied: 'removed' })?.outcome);
  stopStream(stream);
  return ended;
}

export async function lowerLevel(token: string): Promise<void> {
  const signaling = new Signaling({ token, url: 'wss://video.clinic.example/ws' });
  signaling.on('frame', (frame) => console.info(frame.type));
  signaling.on('ended', ({ outcome }) => console.info(outcome));
  signaling.start();
  const { cameras } = await listDevices();
  console.info(cameras.length, backoffDelay(3, { random: () => 0.5 }), classifyMediaError(new Error('x')));
}

// A provider's dashboard: the queue, presence, messages, and seeing a patient.
export function providerPage(token: string): Dashboard {
  const board = new Dashboard({ token });
  board.on('queue', ({ entries, presence, chosen }) => {
    for (const e of entries) console.info(e.position, e.participant.name ?? '', e.consent?.version, e.precheck?.network);
    console.info(presence ?? chosen);
  });
  board.on('visit_token', async ({ token: doctorToken, visit_id }) => {
    const visit = new Visit({ token: doctorToken });
    visit.on('invite_link', ({ join_url, expires_at, name }) => console.info(join_url, expires_at, name));
    visit.join();
    visit.invite('Ana (interpreter)');
    console.info(visit_id);
  });
  board.setPresence('busy');
  // @ts-expect-error: presence is one of three
  board.setPresence('lunch');
  board.notify('Running ten minutes late');
  board.take('0b6f0e1a-6a38-4d4f-9c54-8f1c2f3a4b5c');
  return board.join();
}
