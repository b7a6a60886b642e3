-- Identities removed or denied in a visit (docs/security.md, "Revocation"): join and
-- resume tokens for one issued no later than `blocked_at` are refused. One row per visit
-- and identity, holding its latest block; written in the same transaction as the removal
-- or denial and its audit row, and loaded with the visit on every node.
CREATE TABLE access_blocks (
    visit_id   TEXT COLLATE "C" NOT NULL REFERENCES visits (id),
    identity   TEXT   NOT NULL,
    blocked_at BIGINT NOT NULL,
    PRIMARY KEY (visit_id, identity)
);

-- The embedded TURN server reads the blocks of the last day (no TURN credential lives
-- longer) to refuse credentials of blocked identities.
CREATE INDEX access_blocks_by_time ON access_blocks (blocked_at);
