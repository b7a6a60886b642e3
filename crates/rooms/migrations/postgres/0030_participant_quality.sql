-- Each participant's call quality over a visit (docs/quality.md): the summary their
-- browser's reports were folded into (bucket counts, sums, extremes, the class shown),
-- never the reports themselves, and no address. Kept after the visit ends: it is what
-- GET /v1/visits/{id}/quality and the visit.ended webhook report.
CREATE TABLE participant_quality (
    visit_id       TEXT   NOT NULL REFERENCES visits (id),
    participant_id TEXT   NOT NULL,
    identity       TEXT   NOT NULL,
    role           TEXT   NOT NULL,
    tracker        TEXT   NOT NULL,
    PRIMARY KEY (visit_id, participant_id)
);
