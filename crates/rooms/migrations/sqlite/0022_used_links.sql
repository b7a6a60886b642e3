-- Single-use links that let someone in (docs/security.md, "Single-use links"): a join with
-- a token whose `jti` is here is refused (`token_used`). Written in the same transaction
-- as the join and its audit row (which names the same `jti`), loaded with the visit on
-- every node. The primary key is the token's id: a token names one visit.
CREATE TABLE used_links (
    jti      TEXT    NOT NULL PRIMARY KEY,
    visit_id TEXT    NOT NULL REFERENCES visits (id),
    used_at  INTEGER NOT NULL
);

CREATE INDEX used_links_by_visit ON used_links (visit_id);
