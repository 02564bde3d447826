// /v1/jobs: submit (idempotent on the job id), get, list, why, cancel, requeue, set priority, locate.
// A submitter acts on its own tenant subtree; requeue is an operator action (audited).
import { createHash } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { JobSpec } from '../../types';
import { validateSpec } from '../../validation';
import { ApiError, badInput, conflict, problemFromMessage } from '../errors';
import { applicableLimits } from '../limits';
import {
  JobIdParams,
  JobListQuery,
  JobListResponse,
  JobSpecSchema,
  JobView,
  JobStatusSchema,
  LocationResponse,
  OptionalReasonBody,
  PriorityBody,
  ReasonBody,
  SubmitResponse,
  WhyResponse,
  refusals,
} from '../schemas';
import { explainWait } from '../why';
import type { RouteDeps } from '../app';
import { audited, needRole, needTenant, visibleJob } from './guard';
import { decodeCursor, pageLimit } from './paging';

/** A spec's identity for idempotency: sha256 of its JSON with keys sorted at every level. */
export function specSha256(spec: unknown): string {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canonical)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
          )
        : v;
  return createHash('sha256')
    .update(JSON.stringify(canonical(spec)))
    .digest('hex');
}

export const jobRoutes =
  ({ backend, limits, buckets }: RouteDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/jobs',
      {
        schema: {
          tags: ['jobs'],
          summary: 'submit a job (idempotent on jobId: the same spec again answers 200 with the same body; another spec, 409)',
          body: JobSpecSchema,
          response: { 200: SubmitResponse, 201: SubmitResponse, ...refusals(400, 401, 403, 409, 429) },
        },
      },
      async (req, reply) => {
        const spec = req.body as JobSpec;
        const problems = validateSpec(spec);
        if (problems.length) throw badInput(problems.map((m) => problemFromMessage(m, 'spec')));
        const p = needRole(req, 'submitter');
        needTenant(p, spec.tenant);

        const applied = applicableLimits(spec.tenant, await backend.limitRows(spec.tenant), limits);
        const token = buckets.take(`rate:${applied.rateScope}`, applied.perSecond, applied.burst);
        if (!token.ok)
          throw new ApiError(
            'too-many-requests',
            `${applied.rateScope} may submit ${applied.perSecond} jobs a second (burst ${applied.burst}); try again in ${token.retryAfterS} s`,
            [{ field: 'tenant', rule: `submissions of ${applied.rateScope} are limited to ${applied.perSecond}/s` }],
            token.retryAfterS,
          );

        const sha256 = specSha256(spec);
        const answer = (created: boolean, workflowId: string) =>
          reply.status(created ? 201 : 200).send({ jobId: spec.jobId, tenant: spec.tenant, workflowId, region: backend.region, created });
        let claim = await backend.claimSubmission({ jobId: spec.jobId, tenant: spec.tenant, sha256, by: p.subject });
        if (typeof claim === 'object' && claim.other === 'tenant')
          throw conflict(
            `jobId: ${spec.jobId} is taken in region ${backend.region} by another job; job ids are unique in a region, choose another`,
          );
        if (typeof claim === 'object') {
          // Only a job that was rejected (it held nothing) may take its id again, corrected.
          if ((await backend.endedAs(spec.tenant, spec.jobId)) !== 'rejected')
            throw conflict(`job ${spec.jobId} was submitted with another spec; a job id names one job: submit under a new id`);
          await backend.replaceClaim(spec.jobId, sha256);
          claim = 'new';
        }
        if (claim === 'same') {
          // The same submission again: make sure it was started (a no-op when live), and answer the same.
          try {
            const { workflowId } = await backend.submit(spec);
            return answer(false, workflowId);
          } catch (err) {
            if (err instanceof ApiError && err.code === 'conflict') return answer(false, `job/${spec.tenant}/${spec.jobId}`);
            throw err;
          }
        }
        const queued = await backend.queuedJobs(applied.queueScope);
        if (queued >= applied.maxQueuedJobs) {
          await backend.dropClaim(spec.jobId, sha256);
          throw new ApiError(
            'too-many-requests',
            `${applied.queueScope} has ${queued} jobs queued, its limit is ${applied.maxQueuedJobs}; try again when some are placed`,
            [{ field: 'tenant', rule: `queued jobs of ${applied.queueScope} are limited to ${applied.maxQueuedJobs}` }],
            5,
          );
        }
        try {
          const { workflowId } = await backend.submit(spec);
          req.log.info({ event: 'api.submit', jobId: spec.jobId, tenant: spec.tenant, workflowId, by: p.subject }, 'job submitted');
          return answer(true, workflowId);
        } catch (err) {
          await backend.dropClaim(spec.jobId, sha256);
          throw err;
        }
      },
    );

    app.get(
      '/jobs',
      {
        schema: {
          tags: ['jobs'],
          summary: 'list jobs of your subtree, newest first (filters: state, tier, acceleratorType, region, tenant)',
          querystring: JobListQuery,
          response: { 200: JobListResponse, ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const q = req.query;
        if (q.tenant) needTenant(p, q.tenant);
        const page = await backend.listJobs({
          scope: p.tenant,
          tenant: q.tenant,
          state: q.state,
          tier: q.tier,
          acceleratorType: q.acceleratorType,
          region: q.region,
          limit: pageLimit(q.limit),
          cursor: decodeCursor(q.cursor),
        });
        return { jobs: page.rows, ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) };
      },
    );

    app.get(
      '/jobs/:jobId',
      {
        schema: {
          tags: ['jobs'],
          summary: "a job's status (from its workflow, where it is now) and its database row",
          params: JobIdParams,
          response: { 200: JobView, ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        const [status, summary] = await Promise.all([backend.jobStatus(tenant, req.params.jobId), backend.jobSummary(req.params.jobId)]);
        return {
          jobId: req.params.jobId,
          tenant,
          workflowId: `job/${tenant}/${req.params.jobId}`,
          ...(status ? { status } : {}),
          ...(summary ? { summary } : {}),
        };
      },
    );

    app.get(
      '/jobs/:jobId/why',
      {
        schema: {
          tags: ['jobs'],
          summary: 'why the job waits, and what would unblock it',
          params: JobIdParams,
          response: { 200: WhyResponse, ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        const status = await backend.jobStatus(tenant, req.params.jobId);
        if (status) return explainWait(status);
        const row = await backend.jobSummary(req.params.jobId);
        if (!row) throw new ApiError('not-found', `job ${req.params.jobId}: its workflow does not answer and it has no row here`);
        return {
          jobId: row.jobId,
          state: row.state,
          waiting: false,
          ...(row.waitingReason ? { waitingReason: row.waitingReason } : {}),
          unblock: [],
        };
      },
    );

    app.get(
      '/jobs/:jobId/location',
      {
        schema: {
          tags: ['jobs'],
          summary: 'the region the job is in now, following handoffs',
          params: JobIdParams,
          response: { 200: LocationResponse, ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        const at = await backend.locate(tenant, req.params.jobId);
        return {
          jobId: req.params.jobId,
          region: at.region,
          chain: at.chain,
          phase: at.status.phase,
          ...(at.unreachable ? { unreachable: at.unreachable } : {}),
        };
      },
    );

    app.post(
      '/jobs/:jobId/cancel',
      {
        schema: {
          tags: ['jobs'],
          summary: 'cancel the job wherever it is (409 when it has already ended)',
          params: JobIdParams,
          body: OptionalReasonBody,
          response: { 200: JobStatusSchema, ...refusals(400, 401, 403, 404, 409) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        const reason = req.body.reason ?? `cancelled through the API by ${p.subject}`;
        if (p.role === 'submitter') return backend.cancel(tenant, req.params.jobId, reason);
        // An operator or admin cancelling is an operator action: audited.
        return audited(backend, p, { action: 'job.cancel', target: req.params.jobId, tenant, reason, request: { ...req.body } }, () =>
          backend.cancel(tenant, req.params.jobId, reason),
        );
      },
    );

    app.post(
      '/jobs/:jobId/requeue',
      {
        schema: {
          tags: ['jobs'],
          summary: 'operator: send a placed or running job back to the queue (it keeps its queue position)',
          params: JobIdParams,
          body: ReasonBody,
          response: { 200: JobStatusSchema, ...refusals(400, 401, 403, 404, 409) },
        },
      },
      async (req) => {
        const p = needRole(req, 'operator');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        return audited(
          backend,
          p,
          { action: 'job.requeue', target: req.params.jobId, tenant, reason: req.body.reason, request: { ...req.body } },
          () => backend.requeue(tenant, req.params.jobId, req.body.reason),
        );
      },
    );

    app.post(
      '/jobs/:jobId/priority',
      {
        schema: {
          tags: ['jobs'],
          summary: "change the job's priority within its tier (0..1000)",
          params: JobIdParams,
          body: PriorityBody,
          response: { 200: JobStatusSchema, ...refusals(400, 401, 403, 404, 409) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        const tenant = await visibleJob(backend, p, req.params.jobId);
        if (p.role === 'submitter') return backend.setPriority(tenant, req.params.jobId, req.body.priority);
        return audited(
          backend,
          p,
          {
            action: 'job.priority',
            target: req.params.jobId,
            tenant,
            reason: req.body.reason ?? `priority ${req.body.priority}`,
            request: { ...req.body },
          },
          () => backend.setPriority(tenant, req.params.jobId, req.body.priority),
        );
      },
    );
  };
