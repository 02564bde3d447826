// The HTTP API's Fastify app: every route under /v1, the OpenAPI document at /openapi.json (from
// the route schemas), its docs page at /docs, and /healthz and /readyz. Built from an injected
// backend (api/http/backend.ts) and authenticator (api/http/auth.ts), so tests and the process
// entry point (worker/api-main.ts) build the same app. `buildApiApp(...)` returns it unstarted:
// `await app.listen({ host, port })`, or `app.inject(...)` in tests.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyBaseLogger } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ApiError, problemsFromSchemaErrors, type ErrorBody, type SchemaErrorLike } from './errors';
import type { ApiBackend } from './backend';
import type { Authenticator, Principal } from './auth';
import { DEFAULT_LIMITS, TokenBuckets, type LimitDefaults } from './limits';
import { jobRoutes } from './routes/jobs';
import { reservationRoutes } from './routes/reservations';
import { adminRoutes } from './routes/admin';
import { nodeRoutes } from './routes/nodes';
import { fleetRoutes } from './routes/fleet';
import type { FleetSource } from './fleet';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; set before any /v1 handler runs. */
    principal?: Principal;
  }
  interface FastifyContextConfig {
    /** Served without authentication (docs, health). */
    public?: boolean;
  }
}

export interface ApiAppOptions {
  backend: ApiBackend;
  auth: Authenticator;
  /** A pino logger (region on every line: worker/logger.ts createLogger); none: silent. */
  logger?: FastifyBaseLogger;
  /** Default per-tenant limits where no tenant on the chain sets one. */
  limits?: LimitDefaults;
  /** Largest request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Where the fleet page's rows come from; absent: no /fleet nor /v1/fleet. */
  fleet?: FleetSource;
}

/** What every route plugin is given. */
export interface RouteDeps {
  backend: ApiBackend;
  limits: LimitDefaults;
  buckets: TokenBuckets;
}

export type ApiApp = FastifyInstance;

function errorBody(err: ApiError): ErrorBody {
  return { error: err.code, message: err.message, problems: err.problems };
}

/** Fastify's own 4xx errors (bad JSON, wrong media type, body too large…) in the API's shape. */
function fromFastifyError(err: { code?: string; statusCode?: number; message: string }): ApiError {
  const s = err.statusCode ?? 500;
  if (s === 415) return new ApiError('unsupported-media-type', err.message, [{ field: 'content-type', rule: 'must be application/json' }]);
  if (s === 413) return new ApiError('payload-too-large', err.message, [{ field: 'body', rule: err.message }]);
  if (s === 404) return new ApiError('not-found', err.message);
  if (s === 401) return new ApiError('unauthenticated', err.message);
  if (s === 403) return new ApiError('forbidden', err.message);
  if (s === 429) return new ApiError('too-many-requests', err.message);
  return new ApiError('bad-request', err.message, [{ field: 'body', rule: err.message }]);
}

export async function buildApiApp(o: ApiAppOptions): Promise<ApiApp> {
  const app = Fastify({
    ...(o.logger ? { loggerInstance: o.logger } : { logger: false }),
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    // Every schema error, not the first; nothing coerced or removed: a wrong type or an unknown field is refused.
    ajv: { customOptions: { allErrors: true, coerceTypes: false, removeAdditional: false, useDefaults: false } },
    routerOptions: { ignoreTrailingSlash: true },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler(
    (err: Error & { validation?: SchemaErrorLike[]; validationContext?: string; statusCode?: number; code?: string }, req, reply) => {
      let api: ApiError;
      if (err instanceof ApiError) api = err;
      else if (err.validation) {
        const problems = problemsFromSchemaErrors(err.validation, err.validationContext ?? 'body');
        api = new ApiError('bad-request', problems.map((p) => `${p.field}: ${p.rule}`).join('; '), problems);
      } else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) api = fromFastifyError(err);
      else {
        req.log.error({ event: 'api.error', err, method: req.method, url: req.url }, 'request failed');
        api = new ApiError('internal', `internal error (request ${req.id}); see the API's log`);
      }
      if (api.retryAfterS !== undefined) void reply.header('retry-after', String(api.retryAfterS));
      return reply.status(api.statusCode).send(errorBody(api));
    },
  );
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send(errorBody(new ApiError('not-found', `no route ${req.method} ${req.url.split('?')[0]}; see /docs`))),
  );

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'GPU/NPU scheduler API',
        version: '1',
        description:
          'Submit, watch and steer jobs; book reservations; manage tenants, quotas, nodes and API keys. ' +
          'Authenticate with `Authorization: Bearer <API key or OIDC token>`. Every refusal is `{ error, message, problems: [{ field, rule }] }`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'jobs', description: 'submitter: own tenant subtree' },
        { name: 'reservations', description: 'operator' },
        { name: 'nodes', description: 'operator, over every tenant' },
        { name: 'admin', description: 'admin: tenants, limits, quotas, API keys, audit' },
        { name: 'service', description: 'no authentication' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true, uiConfig: { url: '/openapi.json' } as never });
  app.addHook('onRequest', async (req: FastifyRequest, _reply: FastifyReply) => {
    const config = req.routeOptions.config as { public?: boolean } | undefined;
    // The docs page's own routes (swagger-ui's) are public too.
    if (config?.public || req.routeOptions.url === undefined || req.routeOptions.url.startsWith('/docs')) return;
    req.principal = await o.auth.authenticate(req.headers.authorization);
  });

  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  app.get('/healthz', { config: { public: true }, schema: { tags: ['service'], summary: 'the process is up' } }, async () => ({
    ok: true,
  }));
  app.get(
    '/readyz',
    { config: { public: true }, schema: { tags: ['service'], summary: 'the database and Temporal answer' } },
    async (_req, reply) => {
      const r = await o.backend.ready();
      return reply.status(r.database && r.temporal ? 200 : 503).send({ ok: r.database && r.temporal, ...r });
    },
  );

  const deps: RouteDeps = { backend: o.backend, limits: o.limits ?? DEFAULT_LIMITS, buckets: new TokenBuckets() };
  await app.register(
    async (v1) => {
      await v1.register(jobRoutes(deps));
      await v1.register(reservationRoutes(deps));
      await v1.register(nodeRoutes(deps));
      await v1.register(adminRoutes(deps));
    },
    { prefix: '/v1' },
  );
  if (o.fleet) await app.register(fleetRoutes({ region: o.backend.region, fleet: o.fleet }));
  return app;
}
