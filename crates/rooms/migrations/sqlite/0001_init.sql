-- Times are integer microseconds since the Unix epoch (UTC): exact, ordered, portable.

CREATE TABLE visits (
    id               TEXT PRIMARY KEY,
    tenant           TEXT    NOT NULL,
    external_ref     TEXT,
    status           TEXT    NOT NULL CHECK (status IN ('open', 'active', 'ended')),
    ended_reason     TEXT CHECK (ended_reason IN ('ended_by_doctor', 'ended_by_api', 'expired')),
    created_at       INTEGER NOT NULL,
    not_before       INTEGER,
    expires_at       INTEGER NOT NULL,
    started_at       INTEGER,
    ended_at         INTEGER,
    max_participants INTEGER NOT NULL,
    metadata         TEXT
);

CREATE INDEX visits_by_tenant ON visits (tenant, created_at DESC, id DESC);
CREATE INDEX visits_by_expiry ON visits (status, expires_at);

-- Who is in a live visit, so admissions survive a restart. Rows go when people leave.
CREATE TABLE participants (
    visit_id       TEXT    NOT NULL REFERENCES visits (id),
    participant_id TEXT    NOT NULL,
    identity       TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('waiting', 'admitted')),
    since          INTEGER NOT NULL,
    dropped_at     INTEGER,
    PRIMARY KEY (visit_id, participant_id)
);

CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    visit_id       TEXT    NOT NULL REFERENCES visits (id),
    tenant         TEXT    NOT NULL,
    at             INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    participant_id TEXT,
    identity       TEXT,
    role           TEXT,
    actor          TEXT,
    detail         TEXT
);

CREATE INDEX audit_by_visit ON audit_events (visit_id, seq);

-- Secrets the server generates once and keeps: the resume-token key, the dev API key.
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
