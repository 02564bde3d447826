// Quota usage follows the rules. `quotas.used_milli` is a counter the allocator moves when it
// places and releases; a rule inserted while jobs run started at 0 (the tenant could exceed it),
// and a rule deleted and added again made the next release fail its CHECK and keep its devices.
// `recompute_quota_usage()` rebuilds every charge from what holds devices now: each job holding
// allocations is charged, for its placement's accelerator type, to the rules of its tenant and
// the tenant's ancestors (as the allocator charges), and each rule's usage is the sum of those
// charges. A statement trigger runs it whenever rules are added, removed or re-keyed; the
// reconciler runs it when it finds drift. A release never fails on the counter: it floors at 0.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- What each job holding devices should be charged: its placement's type, the rules of its
    -- tenant and the tenant's ancestors on that type (keys ordered), its milli-devices.
    CREATE VIEW quota_charges_expected AS
      WITH holders AS (
        SELECT j.id, j.tenant, j.quota_milli, min(n.accelerator_type) AS type, sum(a.milli)::bigint AS held
        FROM jobs j JOIN allocations a ON a.job_id = j.id JOIN nodes n ON n.id = a.node_id
        GROUP BY j.id, j.tenant, j.quota_milli)
      SELECT h.id, coalesce(h.quota_milli, h.held) AS milli,
        array_agg(q.tenant || '|' || q.accelerator_type ORDER BY q.tenant) FILTER (WHERE q.tenant IS NOT NULL) AS keys
      FROM holders h
        LEFT JOIN quotas q ON q.accelerator_type = h.type AND (h.tenant = q.tenant OR starts_with(h.tenant, q.tenant || '/'))
      GROUP BY h.id, h.quota_milli, h.held;

    -- Each rule's usage as it should be, beside what it says.
    CREATE VIEW quota_usage_expected AS
      SELECT q.tenant, q.accelerator_type, q.used_milli AS used,
        coalesce((SELECT sum(c.milli) FROM quota_charges_expected c WHERE q.tenant || '|' || q.accelerator_type = ANY(c.keys)), 0)::bigint AS expected
      FROM quotas q;

    CREATE FUNCTION recompute_quota_usage() RETURNS integer LANGUAGE plpgsql AS $$
    DECLARE
      fixed integer;
    BEGIN
      -- Placements lock the rules they charge (FOR UPDATE); this waits for them to commit and
      -- keeps new ones out until the recount is written, so none is counted twice or missed.
      LOCK TABLE quotas IN EXCLUSIVE MODE;
      UPDATE jobs j SET quota_charge = c.keys, quota_milli = c.milli
      FROM quota_charges_expected c
      WHERE j.id = c.id AND (j.quota_charge IS DISTINCT FROM c.keys OR j.quota_milli IS DISTINCT FROM c.milli);
      UPDATE quotas q SET used_milli = u.expected
      FROM quota_usage_expected u
      WHERE q.tenant = u.tenant AND q.accelerator_type = u.accelerator_type AND q.used_milli <> u.expected;
      GET DIAGNOSTICS fixed = ROW_COUNT;
      RETURN fixed;
    END $$;

    CREATE FUNCTION quotas_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM recompute_quota_usage();
      RETURN NULL;
    END $$;

    CREATE TRIGGER quotas_rules_changed AFTER INSERT OR DELETE OR UPDATE OF tenant, accelerator_type ON quotas
      FOR EACH STATEMENT EXECUTE FUNCTION quotas_changed();
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TRIGGER quotas_rules_changed ON quotas;
    DROP FUNCTION quotas_changed();
    DROP FUNCTION recompute_quota_usage();
    DROP VIEW quota_usage_expected;
    DROP VIEW quota_charges_expected;
  `.execute(db);
}
