-- `seq` of GET /v1/events and webhook bodies counts the tenant's own events, with no gaps
-- left by other tenants' (a tenant must not see how busy another is). Existing events
-- keep their numbers, so stored cursors keep working; a tenant's new events continue from
-- its highest. The row's own `seq` stays the storage key.
ALTER TABLE visit_events ADD COLUMN tenant_seq BIGINT;
UPDATE visit_events SET tenant_seq = seq;
CREATE UNIQUE INDEX visit_events_by_tenant_seq ON visit_events (tenant, tenant_seq);

-- The tenant's last tenant_seq, raised in the inserting transaction: the row a writer
-- already locks to order the tenant's events now numbers them too.
ALTER TABLE event_tenants ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
INSERT INTO event_tenants (tenant) SELECT DISTINCT tenant FROM visit_events ON CONFLICT (tenant) DO NOTHING;
UPDATE event_tenants SET last_seq = COALESCE((SELECT MAX(seq) FROM visit_events WHERE visit_events.tenant = event_tenants.tenant), 0);
