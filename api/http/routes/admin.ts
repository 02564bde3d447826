// /v1/admin: tenants and their policies and limits, quota rules, API keys and the audit log, all
// for admins within their subtree (a top-level tenant, or a key over "*", needs an admin over "*").
// Every change is audited. /v1/whoami tells any caller who the API takes them for.
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { tenantAncestors } from '../../tenants';
import { ApiError, badInput, notFound } from '../errors';
import { ALL_TENANTS, covers, isTenantScope, newApiKey, roleAtLeast } from '../auth';
import {
  ApiKeyBody,
  ApiKeyCreated,
  ApiKeySchema,
  AuditListResponse,
  AuditQuery,
  IdParams,
  QuotaBody,
  QuotaKeyBody,
  QuotaSchema,
  ReasonBody,
  TenantBody,
  TenantFilterQuery,
  TenantSchema,
  WhoAmI,
  refusals,
} from '../schemas';
import type { RouteDeps } from '../app';
import { audited, needRole, needTenant, principal } from './guard';
import { pageLimit } from './paging';

export const adminRoutes =
  ({ backend }: RouteDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/whoami',
      { schema: { tags: ['service'], summary: 'who the API takes you for', response: { 200: WhoAmI, ...refusals(401) } } },
      async (req) => {
        const p = principal(req);
        return { subject: p.subject, kind: p.kind, tenant: p.tenant, role: p.role };
      },
    );

    // --- tenants -------------------------------------------------------------------------------
    app.get(
      '/admin/tenants',
      {
        schema: {
          tags: ['admin'],
          summary: 'tenants of your subtree, with policies and limits',
          response: { 200: Type.Object({ tenants: Type.Array(TenantSchema) }), ...refusals(401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        return { tenants: await backend.listTenants(p.tenant) };
      },
    );

    app.put(
      '/admin/tenants',
      {
        schema: {
          tags: ['admin'],
          summary: 'create or change a tenant (its parent must exist): active, allowed tiers and types, largest job, limits',
          body: TenantBody,
          response: { 200: TenantSchema, 201: TenantSchema, ...refusals(400, 401, 403) },
        },
      },
      async (req, reply) => {
        const p = needRole(req, 'admin');
        const { reason, ...t } = req.body;
        needTenant(p, t.path, 'path');
        const parent = tenantAncestors(t.path)[0];
        const existed = (await backend.tenant(t.path)) !== undefined;
        if (!existed && parent && !(await backend.tenant(parent)))
          throw badInput([{ field: 'path', rule: `parent ${parent} is not registered: create it first` }]);
        if (t.limits?.submitBurst != null && t.limits.submitPerSecond === undefined && !existed)
          throw badInput([{ field: 'limits.submitBurst', rule: 'is only meaningful with limits.submitPerSecond' }]);
        const stored = await audited(
          backend,
          p,
          { action: existed ? 'tenant.update' : 'tenant.create', target: t.path, tenant: t.path, reason, request: { ...t } },
          () => backend.putTenant(t),
        );
        return reply.status(existed ? 200 : 201).send(stored);
      },
    );

    // --- quotas --------------------------------------------------------------------------------
    app.get(
      '/admin/quotas',
      {
        schema: {
          tags: ['admin'],
          summary: 'quota rules of your subtree, with the devices each subtree holds now',
          querystring: TenantFilterQuery,
          response: { 200: Type.Object({ quotas: Type.Array(QuotaSchema) }), ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        if (req.query.tenant) needTenant(p, req.query.tenant);
        return { quotas: await backend.listQuotas(p.tenant, req.query.tenant) };
      },
    );

    app.put(
      '/admin/quotas',
      {
        schema: {
          tags: ['admin'],
          summary:
            'set a quota rule (devices of a type for a tenant subtree); checked with every other rule, usage recomputed from the jobs holding devices',
          body: QuotaBody,
          response: { 200: QuotaSchema, ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        const { reason, ...q } = req.body;
        needTenant(p, q.tenant);
        const rule = { ...q, borrowingLimit: q.borrowingLimit ?? null, lendingLimit: q.lendingLimit ?? null };
        return audited(
          backend,
          p,
          { action: 'quota.put', target: `${q.tenant}|${q.acceleratorType}`, tenant: q.tenant, reason, request: rule },
          () => backend.putQuota(rule),
        );
      },
    );

    app.delete(
      '/admin/quotas',
      {
        schema: {
          tags: ['admin'],
          summary: 'remove a quota rule (usage of the others recomputed)',
          body: QuotaKeyBody,
          response: { 200: Type.Object({ removed: Type.Boolean() }), ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        const { reason, ...q } = req.body;
        needTenant(p, q.tenant);
        const removed = await audited(
          backend,
          p,
          { action: 'quota.remove', target: `${q.tenant}|${q.acceleratorType}`, tenant: q.tenant, reason, request: q },
          async () => {
            if (!(await backend.removeQuota(q.tenant, q.acceleratorType)))
              throw notFound(`no quota rule for ${q.tenant} and ${q.acceleratorType}`);
            return true;
          },
        );
        return { removed };
      },
    );

    // --- API keys ------------------------------------------------------------------------------
    app.post(
      '/admin/api-keys',
      {
        schema: {
          tags: ['admin'],
          summary: 'create an API key bound to a tenant subtree and a role; the key is in this answer only',
          body: ApiKeyBody,
          response: { 201: ApiKeyCreated, ...refusals(400, 401, 403) },
        },
      },
      async (req, reply) => {
        const p = needRole(req, 'admin');
        const { reason, ...k } = req.body;
        if (!isTenantScope(k.tenant)) throw badInput([{ field: 'tenant', rule: 'must be a tenant path org[/team[/project]] or "*"' }]);
        if (!covers(p, k.tenant))
          throw new ApiError('forbidden', `tenant: ${k.tenant} is outside your tenant subtree (${p.tenant})`, [
            { field: 'tenant', rule: `must be within ${p.tenant}` },
          ]);
        if (!roleAtLeast(p, k.role)) throw new ApiError('forbidden', `role: you cannot grant ${k.role}, more than your own ${p.role}`);
        if (k.tenant !== ALL_TENANTS && !(await backend.tenant(k.tenant)))
          throw badInput([{ field: 'tenant', rule: `${k.tenant} is not a registered tenant` }]);
        const secret = newApiKey();
        const view = await audited(
          backend,
          p,
          { action: 'api-key.create', target: secret.id, tenant: k.tenant === ALL_TENANTS ? null : k.tenant, reason, request: { ...k } },
          () =>
            backend.createApiKey({
              id: secret.id,
              name: k.name,
              tenant: k.tenant,
              role: k.role,
              sha256: secret.sha256,
              createdBy: p.subject,
            }),
        );
        return reply.status(201).send({ ...view, key: secret.key });
      },
    );

    app.get(
      '/admin/api-keys',
      {
        schema: {
          tags: ['admin'],
          summary: 'API keys of your subtree (never their secrets)',
          response: { 200: Type.Object({ keys: Type.Array(ApiKeySchema) }), ...refusals(401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        return { keys: await backend.listApiKeys(p.tenant) };
      },
    );

    app.post(
      '/admin/api-keys/:id/revoke',
      {
        schema: {
          tags: ['admin'],
          summary: 'revoke an API key: it authenticates nothing from now on',
          params: IdParams,
          body: ReasonBody,
          response: { 200: ApiKeySchema, ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        const key = (await backend.listApiKeys(p.tenant)).find((k) => k.id === req.params.id);
        if (!key) throw notFound(`API key ${req.params.id} is not known within ${p.tenant}`);
        return audited(
          backend,
          p,
          {
            action: 'api-key.revoke',
            target: key.id,
            tenant: key.tenant === ALL_TENANTS ? null : key.tenant,
            reason: req.body.reason,
            request: {},
          },
          async () => (await backend.revokeApiKey(key.id, p.subject)) ?? key,
        );
      },
    );

    // --- audit ---------------------------------------------------------------------------------
    app.get(
      '/admin/audit',
      {
        schema: {
          tags: ['admin'],
          summary: 'operator and admin actions on your subtree, newest first',
          querystring: AuditQuery,
          response: { 200: AuditListResponse, ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'admin');
        if (req.query.tenant) needTenant(p, req.query.tenant);
        const page = await backend.listAudit({
          scope: p.tenant,
          tenant: req.query.tenant,
          action: req.query.action,
          limit: pageLimit(req.query.limit),
          cursor: req.query.cursor,
        });
        return { entries: page.rows, ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) };
      },
    );
  };
