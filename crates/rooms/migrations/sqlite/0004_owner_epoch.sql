-- The fencing token of a visit's owner in a cluster: raised each time a node takes the
-- visit over. A batch written under an older epoch is refused, so a node that lost its
-- lease (paused, partitioned) can never end or change a visit another node now runs.
ALTER TABLE visits ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
