// The CLI's HTTP client: JSON over fetch to the scheduler's API, with the key as a bearer token.
// A refusal becomes a CliApiError carrying the API's `{ error, message, problems }`; a network
// failure says which address could not be reached and why.

export interface Problem {
  field: string;
  rule: string;
}

/** The API answered with an error status. */
export class CliApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly problems: Problem[],
  ) {
    super(message);
  }

  /** What the user reads: the status and message, then one line per field and its rule. */
  describe(): string {
    const head = `refused (${this.status} ${this.code}): ${this.message}`;
    return [head, ...this.problems.map((p) => `  ${p.field}: ${p.rule}`)].join('\n');
  }
}

/** The API could not be reached (or did not answer in JSON). */
export class CliUnreachableError extends Error {}

export type Query = Record<string, string | number | undefined>;

export class SchedApi {
  constructor(
    readonly url: string,
    private readonly key: string | undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, o: { query?: Query; body?: unknown } = {}): Promise<T> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined && v !== '') qs.set(k, String(v));
    const target = `${this.url}${path}${qs.size ? `?${qs}` : ''}`;
    let res: Response;
    try {
      res = await fetch(target, {
        method,
        headers: {
          ...(this.key ? { authorization: `Bearer ${this.key}` } : {}),
          ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
          accept: 'application/json',
        },
        body: o.body !== undefined ? JSON.stringify(o.body) : undefined,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new CliUnreachableError(`cannot reach the scheduler API at ${this.url} (${why}); is it running, and is SCHED_API_URL right?`);
    }
    const text = await res.text();
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      throw new CliUnreachableError(
        `${method} ${target}: answered ${res.status} with something that is not JSON; is ${this.url} the scheduler API?`,
      );
    }
    if (!res.ok) {
      const b = (body ?? {}) as { error?: string; message?: string; problems?: Problem[] };
      throw new CliApiError(res.status, b.error ?? 'error', b.message ?? res.statusText, Array.isArray(b.problems) ? b.problems : []);
    }
    return body as T;
  }
}
