-- Tamper evidence for the audit trail (crates/rooms/src/audit_chain.rs): each row carries
-- the hash of the visit's row before it (`prev_hash`) and its own (`hash`), both SHA-256 as
-- 64 lowercase hex digits. A visit's first row chains from a value derived from its id.
--
-- Unlike SQLite there are no rows from before the chain: every row is chained, and
-- verification treats a row without hashes as tampered with (no audit_chain_start mark).
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

-- The end of each visit's chain: the seq and hash of the last row written. The writer
-- extends a chain from here, and verification compares it with the last row, which is how
-- rows deleted from the end of a trail are noticed.
--
-- Writers serialize per visit by locking the visit's row in `visits` (SELECT ... FOR
-- UPDATE, in id order) before they read a head, take seqs and append: two nodes can never
-- extend the same chain from the same head, and a later writer's seqs are always higher.
CREATE TABLE audit_heads (
    visit_id TEXT COLLATE "C" PRIMARY KEY REFERENCES visits (id),
    seq      BIGINT NOT NULL,
    hash     TEXT   NOT NULL
);
