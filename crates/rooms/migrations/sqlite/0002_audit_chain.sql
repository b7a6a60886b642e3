-- Tamper evidence for the audit trail (crates/rooms/src/audit_chain.rs): each row carries
-- the hash of the visit's row before it (`prev_hash`) and its own (`hash`), both SHA-256 as
-- 64 lowercase hex digits. A visit's first row chains from a value derived from its id.
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;

-- The end of each visit's chain: the seq and hash of the last row written. The writer
-- extends a chain from here with one lookup, and verification compares it with the last
-- row, which is how rows deleted from the end of a trail are noticed.
CREATE TABLE audit_heads (
    visit_id TEXT    PRIMARY KEY REFERENCES visits (id),
    seq      INTEGER NOT NULL,
    hash     TEXT    NOT NULL
);

-- Rows written before this migration cannot be chained here (SQLite has no SHA-256), so
-- they keep NULL hashes and verification counts them as unchained. This mark says which
-- rows those are: a row above it without hashes has been tampered with. A visit with such
-- old rows starts its chain, from its genesis value, at its first row after the mark.
CREATE TABLE audit_chain_start (
    legacy_max_seq INTEGER NOT NULL
);
INSERT INTO audit_chain_start (legacy_max_seq) SELECT COALESCE(MAX(seq), 0) FROM audit_events;
