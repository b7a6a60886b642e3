-- Visit events for the clinic's systems: a durable outbox for webhooks, and the log
-- GET /v1/events reads. Written in the same transaction as the change that caused them.
CREATE TABLE visit_events (
    -- Order across a tenant's events (GET /v1/events?after=SEQ).
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    tenant          TEXT    NOT NULL,
    visit_id        TEXT    NOT NULL,
    -- 1, 2, 3... per visit with no gaps, so a receiver can spot a missing one.
    visit_seq       INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    -- Webhook delivery: attempts so far, when the next one may run, and how it ended.
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    failed_at       INTEGER,
    UNIQUE (visit_id, visit_seq)
);

CREATE INDEX visit_events_by_tenant ON visit_events (tenant, seq);
CREATE INDEX visit_events_pending ON visit_events (tenant, seq) WHERE delivered_at IS NULL AND failed_at IS NULL;
