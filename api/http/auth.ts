// Who is calling, and what they may do. A caller is a Principal: a subject bound to a tenant
// subtree (`*`: every tenant) and a role. Three ways to be one, all as `Authorization: Bearer …`:
// - an API key `sched_<id>_<secret>` (created by an admin, shown once; only its sha256 is stored);
// - the bootstrap admin key from the environment (SCHED_BOOTSTRAP_ADMIN_KEY), for a fresh install;
// - an OIDC JWT signed by the configured issuer (verified with jose against its JWKS), whose
//   claims name the tenant subtree and the role (OIDC_TENANT_CLAIM, OIDC_ROLE_CLAIM).
// Roles are ordered: submitter < operator < admin; each may do what the ones below it may.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, errors as joseErrors, jwtVerify, type JSONWebKeySet, type JWTPayload } from 'jose';
import { inSubtree } from '../tenants';
import { ApiError } from './errors';
import { ROLES, TENANT_PATTERN, type Role } from './schemas';

/** The tenant scope that covers every tenant. */
export const ALL_TENANTS = '*';

export interface Principal {
  /** Who: `key:<id>`, `oidc:<sub>` or `bootstrap`; written to the audit log. */
  subject: string;
  kind: 'api-key' | 'oidc' | 'bootstrap';
  /** The tenant subtree it sees and acts on; `*` for all. */
  tenant: string;
  role: Role;
}

const RANK: Record<Role, number> = { submitter: 0, operator: 1, admin: 2 };

export const roleAtLeast = (p: Pick<Principal, 'role'>, role: Role): boolean => RANK[p.role] >= RANK[role];

/** Whether the principal's subtree holds `tenant` (`*` covers every tenant, and `*` itself). */
export function covers(p: Pick<Principal, 'tenant'>, tenant: string): boolean {
  return p.tenant === ALL_TENANTS || (tenant !== ALL_TENANTS && inSubtree(tenant, p.tenant));
}

const TENANT = new RegExp(TENANT_PATTERN);
export const isTenantScope = (v: unknown): v is string => typeof v === 'string' && (v === ALL_TENANTS || TENANT.test(v));
export const isRole = (v: unknown): v is Role => typeof v === 'string' && (ROLES as readonly string[]).includes(v);

// --- API keys ----------------------------------------------------------------------------------
const KEY = /^sched_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** A new key: its public id, the whole key (given to the caller once) and the hash kept. */
export function newApiKey(): { id: string; key: string; sha256: string } {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const id = [...randomBytes(12)].map((b) => alphabet[b % alphabet.length]).join('');
  const key = `sched_${id}_${randomBytes(32).toString('base64url')}`;
  return { id, key, sha256: sha256(key) };
}

/** The key id inside a token shaped like an API key, else undefined. */
export const apiKeyId = (token: string): string | undefined => KEY.exec(token)?.[1];

const sameHash = (a: string, b: string): boolean => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** What the backend knows of a key. */
export interface StoredKey {
  id: string;
  tenant: string;
  role: Role;
  sha256: string;
  revoked: boolean;
}

// --- OIDC -------------------------------------------------------------------------------------
export interface OidcConfig {
  issuer: string;
  audience: string;
  /** Where the issuer's public keys are: a JWKS URL (fetched and cached), or the key set itself (read from a file). */
  jwks: { url: string } | { keys: JSONWebKeySet };
  /** The claim holding the tenant subtree (a tenant path, or `*`); default `sched_tenant`. */
  tenantClaim: string;
  /** The claim holding the role (a role name, or a list of them: the highest counts); default `sched_role`. */
  roleClaim: string;
}

/**
 * OIDC settings from the environment, or undefined when OIDC_ISSUER is unset: OIDC_ISSUER,
 * OIDC_AUDIENCE, one of OIDC_JWKS_URL / OIDC_JWKS_FILE, and optionally OIDC_TENANT_CLAIM /
 * OIDC_ROLE_CLAIM. Every problem is named before anything starts.
 */
export function oidcConfigFromEnv(env: Record<string, string | undefined>, readFile: (path: string) => string): OidcConfig | undefined {
  if (!env.OIDC_ISSUER) {
    const stray = ['OIDC_AUDIENCE', 'OIDC_JWKS_URL', 'OIDC_JWKS_FILE'].filter((k) => env[k]);
    if (stray.length) throw new Error(`${stray.join(', ')} set without OIDC_ISSUER: set OIDC_ISSUER too, or unset them`);
    return undefined;
  }
  const problems: string[] = [];
  if (!env.OIDC_AUDIENCE) problems.push('OIDC_AUDIENCE must name the audience tokens are issued for');
  if (Boolean(env.OIDC_JWKS_URL) === Boolean(env.OIDC_JWKS_FILE)) problems.push('set exactly one of OIDC_JWKS_URL and OIDC_JWKS_FILE');
  let jwks: OidcConfig['jwks'] | undefined;
  if (env.OIDC_JWKS_URL) {
    try {
      const u = new URL(env.OIDC_JWKS_URL);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('not http(s)');
      jwks = { url: u.toString() };
    } catch {
      problems.push(`OIDC_JWKS_URL ${JSON.stringify(env.OIDC_JWKS_URL)} must be an http(s) URL`);
    }
  } else if (env.OIDC_JWKS_FILE) {
    try {
      const parsed = JSON.parse(readFile(env.OIDC_JWKS_FILE)) as JSONWebKeySet;
      if (!Array.isArray(parsed?.keys)) throw new Error('no "keys" list');
      jwks = { keys: parsed };
    } catch (err) {
      problems.push(`OIDC_JWKS_FILE ${env.OIDC_JWKS_FILE} must hold a JSON key set { "keys": [...] }: ${(err as Error).message}`);
    }
  }
  if (problems.length || !jwks) throw new Error(`OIDC settings refused: ${problems.join('; ')}`);
  return {
    issuer: env.OIDC_ISSUER,
    audience: env.OIDC_AUDIENCE!,
    jwks,
    tenantClaim: env.OIDC_TENANT_CLAIM || 'sched_tenant',
    roleClaim: env.OIDC_ROLE_CLAIM || 'sched_role',
  };
}

/** The principal a verified token's claims map to, or the reason they do not. */
export function principalFromClaims(payload: JWTPayload, cfg: Pick<OidcConfig, 'tenantClaim' | 'roleClaim'>): Principal | string {
  const tenant = payload[cfg.tenantClaim];
  if (!isTenantScope(tenant)) return `claim ${cfg.tenantClaim}: ${JSON.stringify(tenant) ?? 'absent'} must be a tenant path or "*"`;
  const raw = payload[cfg.roleClaim];
  const roles = (Array.isArray(raw) ? raw : [raw]).filter(isRole);
  if (!roles.length) return `claim ${cfg.roleClaim}: ${JSON.stringify(raw) ?? 'absent'} must name a role (${ROLES.join(', ')})`;
  const role = roles.reduce((a, b) => (RANK[b] > RANK[a] ? b : a));
  if (typeof payload.sub !== 'string' || !payload.sub) return 'claim sub: the token names no subject';
  return { subject: `oidc:${payload.sub}`, kind: 'oidc', tenant, role };
}

// --- the authenticator -------------------------------------------------------------------------
export interface Authenticator {
  /** The caller of a request with this Authorization header; ApiError 401 when it proves nothing. */
  authenticate(authorization: string | undefined): Promise<Principal>;
}

export interface AuthOptions {
  /** Reads a key by id (revoked keys too). */
  findKey(id: string): Promise<StoredKey | undefined>;
  /** The bootstrap admin key (SCHED_BOOTSTRAP_ADMIN_KEY): an admin over every tenant. */
  bootstrapKey?: string;
  oidc?: OidcConfig;
}

const unauthenticated = (message: string): ApiError => new ApiError('unauthenticated', message);

export function createAuthenticator(o: AuthOptions): Authenticator {
  const bootstrapHash = o.bootstrapKey ? sha256(o.bootstrapKey) : undefined;
  const keySet = o.oidc
    ? 'url' in o.oidc.jwks
      ? createRemoteJWKSet(new URL(o.oidc.jwks.url))
      : createLocalJWKSet(o.oidc.jwks.keys)
    : undefined;

  async function fromJwt(token: string): Promise<Principal> {
    if (!o.oidc || !keySet) throw unauthenticated('the bearer token is not an API key, and OIDC is not configured');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keySet, { issuer: o.oidc.issuer, audience: o.oidc.audience }));
    } catch (err) {
      throw unauthenticated(`the bearer token was refused: ${jwtRefusal(err)}`);
    }
    const p = principalFromClaims(payload, o.oidc);
    if (typeof p === 'string') throw new ApiError('forbidden', `the token's claims grant nothing: ${p}`);
    return p;
  }

  return {
    async authenticate(authorization) {
      if (!authorization) throw unauthenticated('send Authorization: Bearer <API key or OIDC token>');
      const m = /^Bearer +(\S+)$/i.exec(authorization.trim());
      if (!m) throw unauthenticated('the Authorization header must read "Bearer <API key or OIDC token>"');
      const token = m[1];
      if (bootstrapHash && sameHash(sha256(token), bootstrapHash))
        return { subject: 'bootstrap', kind: 'bootstrap', tenant: ALL_TENANTS, role: 'admin' };
      const id = apiKeyId(token);
      if (id) {
        const key = await o.findKey(id);
        if (!key || !sameHash(sha256(token), key.sha256)) throw unauthenticated('unknown API key');
        if (key.revoked) throw unauthenticated(`API key ${id} has been revoked`);
        return { subject: `key:${id}`, kind: 'api-key', tenant: key.tenant, role: key.role };
      }
      if (token.split('.').length === 3) return fromJwt(token);
      throw unauthenticated('the bearer token is neither an API key (sched_<id>_<secret>) nor a JWT');
    },
  };
}

/** Why jose refused a token, in words (never the token). */
function jwtRefusal(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'it has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return `claim ${err.claim} ${err.reason === 'check_failed' ? 'does not match' : err.reason}`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return "no key of the issuer's key set matches its signature";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'its signature does not verify';
  if (err instanceof joseErrors.JOSEError) return `${err.code}: ${err.message}`;
  return (err as Error).message ?? String(err);
}
