// /v1/reservations: book capacity for a tenant over a window (refused when it overbooks), list,
// cancel. Booking and cancelling are operator actions on the caller's subtree, audited.
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { validateReservation } from '../../validation';
import { badInput, notFound, problemFromMessage } from '../errors';
import { IdParams, ReasonBody, ReservationBody, ReservationListQuery, ReservationSchema, refusals } from '../schemas';
import type { RouteDeps } from '../app';
import { audited, needRole, needTenant } from './guard';

export const reservationRoutes =
  ({ backend }: RouteDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/reservations',
      {
        schema: {
          tags: ['reservations'],
          summary: 'operator: book devices of a type for a tenant over a window (409 when the window would overbook the region)',
          body: ReservationBody,
          response: { 201: ReservationSchema, ...refusals(400, 401, 403, 409) },
        },
      },
      async (req, reply) => {
        const { reason, ...r } = req.body;
        const problems = validateReservation(r);
        if (problems.length) throw badInput(problems.map((m) => problemFromMessage(m, 'reservation')));
        const p = needRole(req, 'operator');
        needTenant(p, r.tenant);
        const info = await audited(
          backend,
          p,
          { action: 'reservation.create', target: r.id, tenant: r.tenant, reason, request: { ...r } },
          () => backend.reserve(r),
        );
        return reply.status(201).send({
          id: info.id,
          tenant: info.tenant,
          acceleratorType: info.acceleratorType,
          devices: info.devices,
          startsAt: info.startsAt,
          endsAt: info.endsAt,
          state: info.state,
        });
      },
    );

    app.get(
      '/reservations',
      {
        schema: {
          tags: ['reservations'],
          summary: 'reservations of your subtree',
          querystring: ReservationListQuery,
          response: { 200: Type.Object({ reservations: Type.Array(ReservationSchema) }), ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = needRole(req, 'submitter');
        if (req.query.tenant) needTenant(p, req.query.tenant);
        return { reservations: await backend.listReservations({ scope: p.tenant, tenant: req.query.tenant, state: req.query.state }) };
      },
    );

    app.post(
      '/reservations/:id/cancel',
      {
        schema: {
          tags: ['reservations'],
          summary: 'operator: end a reservation now (or before it starts)',
          params: IdParams,
          body: ReasonBody,
          response: { 200: ReservationSchema, ...refusals(400, 401, 403, 404) },
        },
      },
      async (req) => {
        const p = needRole(req, 'operator');
        const found = await backend.reservation(req.params.id);
        if (!found) throw notFound(`reservation ${req.params.id} does not exist`);
        needTenant(p, found.tenant);
        await audited(
          backend,
          p,
          { action: 'reservation.cancel', target: req.params.id, tenant: found.tenant, reason: req.body.reason, request: { ...req.body } },
          () => backend.cancelReservation(req.params.id),
        );
        return (await backend.reservation(req.params.id)) ?? found;
      },
    );
  };
