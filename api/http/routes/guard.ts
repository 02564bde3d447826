// Authorization and auditing shared by the routes: who the caller is, whether their role and
// tenant subtree allow the action, and the audit row of every operator and admin action.
import type { FastifyRequest } from 'fastify';
import { ApiError, forbidden, notFound } from '../errors';
import { covers, roleAtLeast, type Principal } from '../auth';
import type { ApiBackend } from '../backend';
import type { Role } from '../schemas';

export function principal(req: FastifyRequest): Principal {
  if (!req.principal) throw new ApiError('unauthenticated', 'send Authorization: Bearer <API key or OIDC token>');
  return req.principal;
}

/** The caller, refused (403) unless their role is at least `role`. */
export function needRole(req: FastifyRequest, role: Role): Principal {
  const p = principal(req);
  if (!roleAtLeast(p, role)) throw forbidden(`this action needs the ${role} role; ${p.subject} is ${p.role}`);
  return p;
}

/** Refused (403) unless `tenant` is in the caller's subtree. */
export function needTenant(p: Principal, tenant: string, field = 'tenant'): void {
  if (!covers(p, tenant))
    throw new ApiError('forbidden', `${field}: ${tenant} is outside your tenant subtree (${p.tenant})`, [
      { field, rule: `must be within ${p.tenant}` },
    ]);
}

/** The tenant of a job the caller may see; 404 for a job unknown here or outside their subtree (the same answer: nothing leaks). */
export async function visibleJob(backend: ApiBackend, p: Principal, jobId: string): Promise<string> {
  const tenant = await backend.jobTenant(jobId);
  if (tenant === undefined || !covers(p, tenant))
    throw notFound(`job ${jobId} is not known in region ${backend.region} within ${p.tenant}`);
  return tenant;
}

/**
 * Runs an operator or admin action and writes its audit row: who, what, on what, for which tenant,
 * the reason given, and how it went (ok; refused: the scheduler or a rule said no; failed).
 * Called only after the request passed validation and authorization: bad input writes nothing.
 */
export async function audited<T>(
  backend: ApiBackend,
  p: Principal,
  what: { action: string; target: string; tenant: string | null; reason: string; request: Record<string, unknown> },
  run: () => Promise<T>,
): Promise<T> {
  const base = { actor: p.subject, actorKind: p.kind, role: p.role, ...what };
  let result: T;
  try {
    result = await run();
  } catch (err) {
    // Bad input found only by the backend (an unknown type, a rule the quota validation refuses) writes nothing, not even a row here.
    if (err instanceof ApiError && err.code === 'bad-request') throw err;
    const refused = err instanceof ApiError && err.statusCode < 500;
    await backend.audit({ ...base, outcome: refused ? 'refused' : 'failed', detail: (err as Error).message.slice(0, 2000) });
    throw err;
  }
  await backend.audit({ ...base, outcome: 'ok' });
  return result;
}
