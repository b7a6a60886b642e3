-- The clinic's day (issue 14).
-- Whose queue a visit is in, and what patients and guests agree to before they knock.
ALTER TABLE visits ADD COLUMN provider TEXT;
ALTER TABLE visits ADD COLUMN consent_version TEXT;
ALTER TABLE visits ADD COLUMN consent_text TEXT;
-- A participant's consent (version and time), kept while they hold their place.
ALTER TABLE participants ADD COLUMN consent_version TEXT;
ALTER TABLE participants ADD COLUMN consent_at BIGINT;
-- Each time a provider was in one of their visits, from when to when: the history the
-- expected wait is estimated from.
CREATE TABLE consultations (
    tenant     TEXT   NOT NULL,
    provider   TEXT   NOT NULL,
    visit_id   TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL
);
CREATE INDEX consultations_by_provider ON consultations (tenant, provider, ended_at);
