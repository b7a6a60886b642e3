-- Visit events for the clinic's systems: a durable outbox for webhooks, and the log
-- GET /v1/events reads. Written in the same transaction as the change that caused them.
CREATE SEQUENCE visit_events_seq AS BIGINT;

CREATE TABLE visit_events (
    -- Order across a tenant's events (GET /v1/events?after=SEQ). Taken from the sequence
    -- at insert, while the writer holds its tenant's row in event_tenants (below): so a
    -- tenant's events commit in seq order and a reader paging by seq never has one with a
    -- lower seq appear behind it later.
    seq             BIGINT PRIMARY KEY DEFAULT nextval('visit_events_seq'),
    id              TEXT COLLATE "C" NOT NULL UNIQUE,
    tenant          TEXT COLLATE "C" NOT NULL,
    visit_id        TEXT COLLATE "C" NOT NULL,
    -- 1, 2, 3... per visit with no gaps, so a receiver can spot a missing one.
    visit_seq       BIGINT NOT NULL,
    kind            TEXT   NOT NULL,
    at              BIGINT NOT NULL,
    data            TEXT   NOT NULL,
    -- Webhook delivery: attempts so far, when the next one may run, and how it ended.
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    failed_at       BIGINT,
    UNIQUE (visit_id, visit_seq)
);

ALTER SEQUENCE visit_events_seq OWNED BY visit_events.seq;

CREATE INDEX visit_events_by_tenant ON visit_events (tenant, seq);
CREATE INDEX visit_events_pending ON visit_events (tenant, seq) WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Per visit, the last visit_seq given: incremented in the inserting transaction (a row
-- lock until commit), so visit_seq is gapless even with several writers.
CREATE TABLE visit_event_counters (
    visit_id TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- One row per tenant with events: a writer locks its tenant's row before inserting that
-- tenant's events, which orders the tenant's events by commit (see visit_events.seq).
CREATE TABLE event_tenants (
    tenant TEXT COLLATE "C" PRIMARY KEY
);
