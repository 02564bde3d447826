// The fleet view: `GET /v1/fleet` (operator: the region's nodes by type and use, the caller's
// subtree's queue by tier, recent preemptions) and the page that draws it, `GET /fleet` (public:
// the page holds no data; it asks for a key and calls /v1/fleet with it).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { FleetSummarySchema, fleetSummary, type FleetSource } from '../fleet';
import { fleetPageHtml } from '../fleet-page';
import { refusals } from '../schemas';
import { needRole } from './guard';

export const fleetRoutes =
  (o: { region: string; fleet: FleetSource }): FastifyPluginAsyncTypebox =>
  async (app) => {
    const page = fleetPageHtml();
    app.get('/fleet', { config: { public: true }, schema: { tags: ['service'], summary: 'the fleet page (HTML)' } }, async (_req, reply) =>
      reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page),
    );
    app.get(
      '/v1/fleet',
      {
        schema: {
          tags: ['nodes'],
          summary: "operator: the region's nodes by accelerator type and use, the queue by tier, recent preemptions",
          response: { 200: FleetSummarySchema, ...refusals(401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'operator');
        return fleetSummary(o.region, await o.fleet.read(p.tenant), new Date());
      },
    );
  };
