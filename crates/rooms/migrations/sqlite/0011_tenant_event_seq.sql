-- `seq` of GET /v1/events and webhook bodies counts the tenant's own events, with no gaps
-- left by other tenants' (a tenant must not see how busy another is). Existing events
-- keep their numbers, so stored cursors keep working; a tenant's new events continue from
-- its highest. The row's own `seq` stays the storage key.
ALTER TABLE visit_events ADD COLUMN tenant_seq INTEGER;
UPDATE visit_events SET tenant_seq = seq;
CREATE UNIQUE INDEX visit_events_by_tenant_seq ON visit_events (tenant, tenant_seq);
