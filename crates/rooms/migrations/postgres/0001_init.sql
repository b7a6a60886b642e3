-- PostgreSQL schema, the same in spirit as migrations/sqlite (see docs/postgres.md).
--
-- Times are BIGINT microseconds since the Unix epoch (UTC), exactly as in SQLite: exact,
-- ordered, and what the audit chain hashes (crates/rooms/src/audit_chain.rs), so a row's
-- hash is the same whichever database holds it. Ids compare byte-wise (COLLATE "C"), as
-- SQLite's text does, whatever the database's locale: ordering and paging match.

CREATE TABLE visits (
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant           TEXT COLLATE "C" NOT NULL,
    external_ref     TEXT,
    status           TEXT   NOT NULL CHECK (status IN ('open', 'active', 'ended')),
    ended_reason     TEXT CHECK (ended_reason IN ('ended_by_doctor', 'ended_by_api', 'expired')),
    created_at       BIGINT NOT NULL,
    not_before       BIGINT,
    expires_at       BIGINT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    max_participants BIGINT NOT NULL,
    -- JSON kept as the text it was written as (key order, number spelling).
    metadata         TEXT
);

CREATE INDEX visits_by_tenant ON visits (tenant, created_at DESC, id DESC);
CREATE INDEX visits_by_expiry ON visits (status, expires_at);

-- Who is in a live visit, so admissions survive a restart. Rows go when people leave.
CREATE TABLE participants (
    visit_id       TEXT COLLATE "C" NOT NULL REFERENCES visits (id),
    participant_id TEXT COLLATE "C" NOT NULL,
    identity       TEXT   NOT NULL,
    role           TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    state          TEXT   NOT NULL CHECK (state IN ('waiting', 'admitted')),
    since          BIGINT NOT NULL,
    dropped_at     BIGINT,
    PRIMARY KEY (visit_id, participant_id)
);

-- `seq` comes from the sequence, taken by the writer before it hashes the row (the hash
-- covers it); see audit_heads in 0002 for how a visit's rows stay in chain order.
CREATE SEQUENCE audit_events_seq AS BIGINT;

CREATE TABLE audit_events (
    seq            BIGINT PRIMARY KEY DEFAULT nextval('audit_events_seq'),
    visit_id       TEXT COLLATE "C" NOT NULL REFERENCES visits (id),
    tenant         TEXT   NOT NULL,
    at             BIGINT NOT NULL,
    kind           TEXT   NOT NULL,
    participant_id TEXT,
    identity       TEXT,
    role           TEXT,
    actor          TEXT,
    detail         TEXT
);

ALTER SEQUENCE audit_events_seq OWNED BY audit_events.seq;

CREATE INDEX audit_by_visit ON audit_events (visit_id, seq);

-- Secrets the server generates once and keeps: the resume-token key, the dev API key.
CREATE TABLE server_secrets (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
