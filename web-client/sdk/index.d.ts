// Types of Bedside's client SDK (index.js). The protocol itself: docs/protocol.md; a guide
// with a whole custom visit page: docs/sdk.md.
//
// Server frames keep the protocol's snake_case fields exactly; the SDK's own events and
// options are camelCase. Frames and fields this version does not list still arrive (every
// frame is emitted under its `type` and as `frame`), typed as `ServerFrame`.

// ---------------------------------------------------------------- protocol values

export type Role = 'doctor' | 'patient' | 'guest';
export type ParticipantState = 'waiting' | 'admitted';
export type LeaveReason = 'left' | 'removed' | 'timed_out';
export type EndReason = 'ended_by_doctor' | 'ended_by_api' | 'expired';
export type Quality = 'good' | 'fair' | 'poor';
/** Why a connection is not good, or `relay` for a good one through TURN (docs/quality.md). */
export type QualityReason = 'packet_loss' | 'latency' | 'jitter' | 'bandwidth' | 'relay';
export type PrecheckNetwork = 'direct' | 'relay' | 'blocked';

/** The pre-call check's result (`precheck` frame; in lobby entries with `at`). */
export interface PrecheckResult {
  camera: boolean;
  microphone: boolean;
  network: PrecheckNetwork;
  /** Which configured TURN transports allocated a relay. */
  turn?: { udp?: boolean; tcp?: boolean; tls?: boolean };
}
export type Presence = 'available' | 'busy' | 'away';

export interface MediaState {
  audio: boolean;
  video: boolean;
  screen: boolean;
}

/** A participant object. `identity` is present only for doctors' eyes. */
export interface Participant {
  participant_id: string;
  identity?: string;
  role: Role;
  name?: string;
  state: ParticipantState;
  media: MediaState;
  /** false while the participant is reconnecting (within the grace period). */
  connected?: boolean;
  quality?: Quality;
  quality_reason?: QualityReason;
}

/** A consent given before knocking (second-round contract). */
export interface ConsentRecord {
  version: string;
  at: string;
}

/** One person in the waiting room, as `lobby` lists them to doctors. */
export interface LobbyEntry {
  participant_id: string;
  name?: string;
  role: Role;
  /** RFC 3339: when they started waiting. */
  since: string;
  connected?: boolean;
  consent?: ConsentRecord;
  precheck?: PrecheckResult & { at: string };
}

export interface VisitSummary {
  id: string;
  status: 'open' | 'active' | 'ended';
}

// ---------------------------------------------------------------- server frames

/** Any server frame, including types this version of the SDK does not know yet. */
export interface ServerFrame {
  type: string;
  [field: string]: unknown;
}

export interface JoinedFrame {
  type: 'joined';
  participant_id: string;
  role: Role;
  visit: VisitSummary;
  ice_servers: RTCIceServer[];
  resume_token: string;
}

export interface WaitingFrame {
  type: 'waiting';
  /** Place in the provider's queue, from 1 (second-round contract). */
  position?: number;
  expected_wait_secs?: number;
  provider?: { name?: string; presence?: Presence };
  /** STUN and at most a short-lived probe TURN entry for the pre-call check. */
  ice_servers?: RTCIceServer[];
}

export interface LobbyFrame {
  type: 'lobby';
  waiting: LobbyEntry[];
}

export interface AdmittedFrame {
  type: 'admitted';
  /** The admitted participants already here (never ourselves). */
  participants: Participant[];
  /** When present, replaces the servers from `joined` (TURN for admitted participants). */
  ice_servers?: RTCIceServer[];
}

export interface ParticipantJoinedFrame {
  type: 'participant_joined';
  participant: Participant;
}

export interface ParticipantUpdatedFrame {
  type: 'participant_updated';
  participant: Participant;
}

export interface ParticipantLeftFrame {
  type: 'participant_left';
  participant_id: string;
  reason: LeaveReason;
}

export interface SignalFrame {
  type: 'signal';
  from: string;
  data: unknown;
}

export interface ChatFrame {
  type: 'chat';
  from: string;
  text: string;
  /** RFC 3339. */
  at: string;
}

export interface DeniedFrame {
  type: 'denied';
  /** The doctor's words, `denied`, or `removed`. */
  reason: string;
}

export interface VisitExpiringFrame {
  type: 'visit_expiring';
  expires_at: string;
}

export interface VisitEndedFrame {
  type: 'visit_ended';
  reason: EndReason;
}

/** Our own connection's class changed. */
export interface QualityFrame {
  type: 'quality';
  quality: Quality;
  reason?: QualityReason;
}

export interface ErrorFrame {
  type: 'error';
  /** docs/protocol.md lists the codes (`not_admitted`, `invalid_chat`, `access_revoked`, ...). */
  code: string;
  message: string;
}

/** A provider's words to the waiting room (second-round contract). */
export interface ProviderMessageFrame {
  type: 'provider_message';
  text: string;
  at: string;
}

/** Consent to give before knocking (second-round contract): answer with `send({type: 'consent', version})`. */
export interface ConsentRequiredFrame {
  type: 'consent_required';
  version: string;
  text: string;
}

/** The answer to a doctor's `invite`: a guest link for the visit (docs/protocol.md, "Invites from the call"). */
export interface InviteLinkFrame {
  type: 'invite_link';
  token: string;
  join_url: string;
  expires_at: string;
  /** The guest's name as it will show. */
  name: string;
}

/** One waiting participant in a provider's queue (`queue` frames, `GET /v1/providers/{provider}/queue`). */
export interface QueueEntry {
  visit_id: string;
  external_ref?: string | null;
  participant: { participant_id: string; name?: string; role: Role; since: string };
  /** From 1, across the provider's whole queue. */
  position: number;
  consent?: ConsentRecord;
  precheck?: PrecheckResult & { at: string };
}

/** A provider's dashboard: the first frame. */
export interface DashboardJoinedFrame {
  type: 'joined';
  role: 'provider';
  provider: string;
  name?: string;
}

/** The provider's queue, on join and on every change. */
export interface QueueFrame {
  type: 'queue';
  entries: QueueEntry[];
  /** How the provider shows to waiting patients. */
  presence?: Presence;
  /** What the provider chose. */
  chosen: Presence;
}

/** The answer to `take`: a doctor token for that visit. */
export interface VisitTokenFrame {
  type: 'visit_token';
  visit_id: string;
  token: string;
  expires_at: string;
}

/** The frames of a provider's dashboard, by type. */
export interface DashboardEvents {
  joined: DashboardJoinedFrame;
  queue: QueueFrame;
  visit_token: VisitTokenFrame;
  error: ErrorFrame;
  frame: ServerFrame;
  connection: ConnectionEvent;
  ended: EndedEvent;
}

/** The server frames the SDK knows, by type. */
export interface FrameEvents {
  joined: JoinedFrame;
  waiting: WaitingFrame;
  lobby: LobbyFrame;
  admitted: AdmittedFrame;
  participant_joined: ParticipantJoinedFrame;
  participant_updated: ParticipantUpdatedFrame;
  participant_left: ParticipantLeftFrame;
  signal: SignalFrame;
  chat: ChatFrame;
  denied: DeniedFrame;
  visit_expiring: VisitExpiringFrame;
  visit_ended: VisitEndedFrame;
  error: ErrorFrame;
  quality: QualityFrame;
  provider_message: ProviderMessageFrame;
  consent_required: ConsentRequiredFrame;
  invite_link: InviteLinkFrame;
}

// ---------------------------------------------------------------- the SDK's own events

export type ConnectionState = 'connecting' | 'connected' | 'reconnecting';

export interface ConnectionEvent {
  state: ConnectionState;
  /** Reconnect attempts since the last successful join. */
  attempt: number;
  /** When reconnecting: the backoff before the next attempt. */
  delayMs?: number;
}

/** Why the visit is over for this page. */
export type Outcome =
  | 'left'
  | 'ended'
  | 'denied'
  | 'removed'
  | 'revoked'
  | 'not_found'
  | 'link_invalid'
  | 'link_expired'
  | 'link_used'
  | 'visit_full'
  | 'not_started'
  | 'replaced'
  | 'error';

export interface EndedEvent {
  outcome: Outcome;
  /** The WebSocket close code. */
  code: number;
  /** For `ended`: an EndReason; for `denied`: the doctor's words, if any. */
  reason?: string;
}

export interface RemoteStreamEvent {
  participantId: string;
  /** Show it in a <video>; tracks are added to it as they arrive. */
  stream: MediaStream;
}

export interface PeerStateEvent {
  participantId: string;
  state: RTCPeerConnectionState;
}

export interface VisitEvents extends FrameEvents {
  /** Every server frame (but `pong`), before its own typed event. */
  frame: ServerFrame;
  connection: ConnectionEvent;
  ended: EndedEvent;
  remote_stream: RemoteStreamEvent;
  peer_state: PeerStateEvent;
  /** Our own media state changed (setMedia, setTrack, screen sharing started or stopped). */
  local_media: MediaState;
  /** The network check ran (while waiting); sent to the server as `precheck`. */
  precheck: PrecheckResult;
}

// ---------------------------------------------------------------- classes

export declare class Emitter extends EventTarget {
  /** Calls `listener(detail)` for every `type` event; returns a function that stops it. */
  on(type: string, listener: (detail: any) => void): () => void;
  /** The detail of the next `type` event. */
  once(type: string): Promise<any>;
}

export type VisitState = 'idle' | 'connecting' | 'waiting' | 'admitted' | 'ended';

export interface VisitOptions {
  /** The join token (from the link's `#token=`). */
  token: string;
  /** The `/ws` URL; default: `ws(s)://` + this page's host + `/ws`. */
  url?: string;
  /** Camera and microphone to send; default: nothing (see and hear only). */
  stream?: MediaStream;
  /** Run the network check while waiting and send it as `precheck`; default true. */
  precheck?: boolean;
}

export interface SelfParticipant {
  participant_id: string;
  role: Role;
  name?: string;
}

export interface ChangeMedia {
  audio?: boolean;
  video?: boolean;
}

export declare class Visit extends Emitter {
  constructor(options: VisitOptions);

  on<K extends keyof VisitEvents>(type: K, listener: (detail: VisitEvents[K]) => void): () => void;
  /** A frame type this version does not list. */
  on(type: string, listener: (detail: ServerFrame) => void): () => void;
  once<K extends keyof VisitEvents>(type: K): Promise<VisitEvents[K]>;
  once(type: string): Promise<ServerFrame>;

  /** Connects and joins; reconnects by itself (resuming its place) until `ended`. */
  join(): this;
  /** Leaves for good (no grace period); `ended` {outcome: 'left'} follows. */
  leave(): void;

  readonly state: VisitState;
  /** Whether frames can be sent right now. */
  readonly connected: boolean;
  /** The token's claims, decoded but not verified; null if it is not shaped like a JWT. */
  readonly claims: TokenClaims | null;
  readonly self: SelfParticipant | null;
  readonly visit: VisitSummary | null;
  /** The other admitted participants, by participant id. */
  readonly participants: ReadonlyMap<string, Participant>;
  /** The waiting room from the last `lobby` frame (doctors). */
  readonly waiting: readonly LobbyEntry[];
  readonly iceServers: readonly RTCIceServer[];
  /** Our own connection's class as the server last said it (during a call), or null. */
  readonly quality: { quality: Quality; reason?: QualityReason } | null;
  /** The network check's result once it ran, or null. */
  readonly precheck: PrecheckResult | null;

  /** Ourselves, someone here, or someone who left (for a transcript), or null. */
  participant(id: string): Participant | SelfParticipant | null;
  remoteStream(id: string): MediaStream | null;
  /** The RTCPeerConnection to participant `id`, for getStats(). */
  peerConnection(id: string): RTCPeerConnection | null;

  /** Sends any client frame (for frames without a method); false if not connected. */
  send(frame: { type: string; [field: string]: unknown }): boolean;
  chat(text: string): boolean;
  admit(participantId: string): boolean;
  deny(participantId: string, reason?: string): boolean;
  remove(participantId: string): boolean;
  endVisit(): boolean;
  /** Doctors: asks for a guest link for this visit (`invite_link` answers). */
  invite(name: string): boolean;
  /** Agrees to the consent text of `consent_required` (its `version`). */
  consent(version: string): boolean;

  readonly localStream: MediaStream;
  /** What the others are told about our microphone, camera and screen. */
  readonly media: MediaState;
  /** Microphone and/or camera on or off (track.enabled: no renegotiation). */
  setMedia(change: ChangeMedia): MediaState;
  /** Replaces the local track of `kind`; returns the previous one (not stopped). */
  setTrack(kind: 'audio' | 'video', track: MediaStreamTrack | null): MediaStreamTrack | null;
  /** Sends a screen, window or tab instead of the camera; false if the person cancelled. */
  shareScreen(): Promise<boolean>;
  stopScreenShare(): void;
}

export interface DashboardOptions {
  /** A provider token (`POST /v1/providers/{provider}/tokens`). */
  token: string;
  url?: string;
}

/** A provider's dashboard socket: the queue, presence, messages to waiting rooms, `take`. */
export declare class Dashboard extends Emitter {
  constructor(options: DashboardOptions);
  on<K extends keyof DashboardEvents>(type: K, listener: (detail: DashboardEvents[K]) => void): () => void;
  on(type: string, listener: (detail: ServerFrame) => void): () => void;
  once<K extends keyof DashboardEvents>(type: K): Promise<DashboardEvents[K]>;
  once(type: string): Promise<ServerFrame>;
  /** Connects; reconnects by itself until `ended`. */
  join(): this;
  leave(): void;
  readonly connected: boolean;
  readonly provider: string | null;
  readonly name: string | null;
  /** The queue from the last `queue` frame, oldest knock first. */
  readonly entries: readonly QueueEntry[];
  readonly presence: Presence | null;
  readonly chosen: Presence | null;
  send(frame: { type: string; [field: string]: unknown }): boolean;
  setPresence(status: Presence): boolean;
  /** To the waiting patients of one visit, or of all the provider's visits. */
  notify(text: string, visitId?: string): boolean;
  take(visitId: string): boolean;
}

export interface SignalingOptions {
  token: string;
  url?: string;
}

export interface SignalingEvents {
  frame: ServerFrame;
  connection: ConnectionEvent;
  ended: EndedEvent;
}

/** The bare connection a Visit builds on: join, resume with backoff, heartbeat, final close. */
export declare class Signaling extends Emitter {
  constructor(options: SignalingOptions);
  on<K extends keyof SignalingEvents>(type: K, listener: (detail: SignalingEvents[K]) => void): () => void;
  once<K extends keyof SignalingEvents>(type: K): Promise<SignalingEvents[K]>;
  readonly participantId: string | null;
  readonly connected: boolean;
  readonly ended: boolean;
  start(): void;
  send(frame: { type: string; [field: string]: unknown }): boolean;
  leave(): void;
}

// ---------------------------------------------------------------- functions

export interface TokenClaims {
  iss: string;
  sub: string;
  visit?: string;
  role: Role | 'provider';
  name?: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  [claim: string]: unknown;
}

/**
 * The token of this tab: from the link's `#token=` (then removed from the address bar and
 * kept in sessionStorage for reloads), or the one kept earlier; null if there is none.
 */
export declare function takeToken(): string | null;
/** The claims of a join token, decoded but not verified; null if it is not one. */
export declare function readClaims(token: string): TokenClaims | null;

/** What a final close means, from its code and the frames before it; null to reconnect. */
export declare function finalOutcome(
  code: number,
  before?: { error?: string; denied?: string; ended?: string },
): { outcome: Outcome; reason?: string } | null;

/** Reconnect delay in ms before attempt `attempt` (from 0): exponential, capped, jittered. */
export declare function backoffDelay(
  attempt: number,
  options?: { baseMs?: number; capMs?: number; random?: () => number },
): number;

export type MediaProblem = 'denied' | 'missing' | 'busy' | 'insecure' | 'unknown';

export declare function classifyMediaError(error: unknown): Exclude<MediaProblem, 'insecure'>;

/**
 * Opens camera and microphone; if asking for both fails, each alone, so a working
 * microphone is kept when the camera is missing. Never throws.
 */
export declare function openLocalMedia(options?: {
  audioId?: string;
  videoId?: string;
}): Promise<{ stream: MediaStream; problems: { audio?: MediaProblem; video?: MediaProblem } }>;

export declare function listDevices(): Promise<{ cameras: MediaDeviceInfo[]; microphones: MediaDeviceInfo[] }>;
/** A screen, window or tab chosen by the person, or null if they cancelled. */
export declare function openScreen(): Promise<MediaStreamTrack | null>;
export declare function stopStream(stream: MediaStream | null | undefined): void;
