// /v1/nodes: list, register, cordon, uncordon, drain, mark down. Nodes serve every tenant, so
// changing one needs the operator role over the whole tree (`*`); every change is audited.
import { Type } from '@sinclair/typebox';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { forbidden, notFound } from '../errors';
import { ALL_TENANTS, type Principal } from '../auth';
import type { NodeAction } from '../backend';
import {
  AcceleratorTypeBody,
  NodeActionResultSchema,
  NodeBody,
  NodeListQuery,
  NodeNameParams,
  NodeSchema,
  ReasonBody,
  refusals,
} from '../schemas';
import type { RouteDeps } from '../app';
import { audited, needRole } from './guard';

/** An operator (or admin) over every tenant. */
function fleetOperator(req: FastifyRequest): Principal {
  const p = needRole(req, 'operator');
  if (p.tenant !== ALL_TENANTS)
    throw forbidden(`nodes serve every tenant: this needs the operator role over "*", ${p.subject} is bound to ${p.tenant}`);
  return p;
}

const ACTIONS: Array<{ action: NodeAction; summary: string }> = [
  { action: 'cordon', summary: 'stop new placements on the node; what runs there keeps running' },
  { action: 'uncordon', summary: 'open the node to placements again' },
  { action: 'drain', summary: 'cordon the node and send every job on it back to the queue' },
  { action: 'down', summary: 'mark the node lost: jobs on it are requeued (queue position kept) as on a node failure' },
];

export const nodeRoutes =
  ({ backend }: RouteDeps): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.get(
      '/nodes',
      {
        schema: {
          tags: ['nodes'],
          summary: "operator: the region's nodes",
          querystring: NodeListQuery,
          response: { 200: Type.Object({ nodes: Type.Array(NodeSchema) }), ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        needRole(req, 'operator');
        return { nodes: await backend.listNodes(req.query) };
      },
    );

    app.post(
      '/nodes',
      {
        schema: {
          tags: ['nodes'],
          summary: 'operator over "*": register a node (201), or answer 200 for one registered with the same shape',
          body: NodeBody,
          response: { 200: NodeSchema, 201: NodeSchema, ...refusals(400, 401, 403, 409) },
        },
      },
      async (req, reply) => {
        const p = fleetOperator(req);
        const { reason, ...node } = req.body;
        const r = await audited(
          backend,
          p,
          { action: 'node.register', target: node.name, tenant: null, reason, request: { ...node } },
          () => backend.registerNode(node),
        );
        return reply.status(r.created ? 201 : 200).send(r.node);
      },
    );

    app.put(
      '/accelerator-types',
      {
        schema: {
          tags: ['nodes'],
          summary: 'operator over "*": declare an accelerator type (before registering its nodes)',
          body: AcceleratorTypeBody,
          response: { 200: Type.Object({ name: Type.String() }), ...refusals(400, 401, 403) },
        },
      },
      async (req) => {
        const p = fleetOperator(req);
        const { reason, ...t } = req.body;
        await audited(backend, p, { action: 'accelerator-type.put', target: t.name, tenant: null, reason, request: { ...t } }, () =>
          backend.putAcceleratorType(t),
        );
        return { name: t.name };
      },
    );

    for (const { action, summary } of ACTIONS)
      app.post(
        `/nodes/:name/${action}`,
        {
          schema: {
            tags: ['nodes'],
            summary: `operator over "*": ${summary}`,
            params: NodeNameParams,
            body: ReasonBody,
            response: { 200: NodeActionResultSchema, ...refusals(400, 401, 403, 404, 409) },
          },
        },
        async (req) => {
          const p = fleetOperator(req);
          if (!(await backend.node(req.params.name)))
            throw notFound(`node ${req.params.name} is not registered in region ${backend.region}`);
          return audited(
            backend,
            p,
            { action: `node.${action}`, target: req.params.name, tenant: null, reason: req.body.reason, request: { ...req.body } },
            () => backend.nodeAction(req.params.name, action),
          );
        },
      );
  };
