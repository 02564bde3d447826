// The HTTP API's refusals: one body shape for every 4xx, `{ error, message, problems }`, where each
// problem names the field (a dotted path into the request, e.g. `request.workers`) and the rule it
// broke. The backend throws ApiError for what only it can know (a job that does not exist, a
// conflicting submission); the app turns schema and domain validation into the same shape.

/** One reason a request was refused: which field, and which rule. */
export interface Problem {
  field: string;
  rule: string;
}

export type ApiErrorCode =
  | 'bad-request'
  | 'unauthenticated'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'too-many-requests'
  | 'unsupported-media-type'
  | 'payload-too-large'
  | 'internal';

const STATUS: Record<ApiErrorCode, number> = {
  'bad-request': 400,
  unauthenticated: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'payload-too-large': 413,
  'unsupported-media-type': 415,
  'too-many-requests': 429,
  internal: 500,
};

export class ApiError extends Error {
  readonly statusCode: number;
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly problems: Problem[] = [],
    /** Seconds a client should wait before trying again (429). */
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = STATUS[code];
  }
}

export const badInput = (problems: Problem[]): ApiError =>
  new ApiError('bad-request', problems.map((p) => `${p.field}: ${p.rule}`).join('; '), problems);
export const notFound = (message: string): ApiError => new ApiError('not-found', message);
export const conflict = (message: string): ApiError => new ApiError('conflict', message);
export const forbidden = (message: string): ApiError => new ApiError('forbidden', message);

/**
 * A problem from one of the project's validation messages, which read `field: rule` (e.g.
 * `request.workers: 0 must be an integer from 1 to 1024`); one without a field prefix is
 * attributed to `fallbackField`.
 */
export function problemFromMessage(message: string, fallbackField: string): Problem {
  const m = /^([A-Za-z_][\w.[\]]*): (.+)$/s.exec(message);
  return m ? { field: m[1], rule: m[2] } : { field: fallbackField, rule: message };
}

/** The subset of an AJV error the mapping reads (Fastify hands these over as `error.validation`). */
export interface SchemaErrorLike {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
}

/** `/request/acceleratorTypes/0` → `request.acceleratorTypes[0]`. */
function fieldOf(instancePath: string, context: string): string {
  const parts = instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = '';
  for (const p of parts) out = /^\d+$/.test(p) ? `${out}[${p}]` : join(out, p);
  return out || context;
}

/** `base.name`, or `base["odd name"]` for a name that is not a plain identifier (an empty key, say). */
function join(base: string, name: string): string {
  if (!/^[A-Za-z_$][\w$]*$/.test(name)) return `${base}[${JSON.stringify(name)}]`;
  return base ? `${base}.${name}` : name;
}

/**
 * AJV's errors (all of them: the app runs AJV with allErrors) as problems, one per field and rule;
 * `context` is where they came from (body, querystring, params) and names a problem with the whole of it.
 */
export function problemsFromSchemaErrors(errors: readonly SchemaErrorLike[], context: string): Problem[] {
  const out: Problem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const at = fieldOf(e.instancePath, '');
    let p: Problem;
    if (e.keyword === 'required') p = { field: join(at, String(e.params.missingProperty)), rule: 'is required' };
    else if (e.keyword === 'additionalProperties')
      p = { field: join(at, String(e.params.additionalProperty)), rule: 'is not a known field' };
    else if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues))
      p = { field: at || context, rule: `must be one of ${e.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}` };
    else p = { field: at || context, rule: e.message ?? e.keyword };
    const key = `${p.field}\u0000${p.rule}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(p);
    }
  }
  return out.length ? out : [{ field: context, rule: 'does not match the schema' }];
}

/** The JSON body every refusal carries. */
export interface ErrorBody {
  error: ApiErrorCode;
  message: string;
  problems: Problem[];
}
