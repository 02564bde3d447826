// Tenant paths: `org`, `org/team`, `org/team/project`. A tenant's subtree is itself and every
// path below it; policies, quotas and reservations of a tenant cover its subtree.

/** Every ancestor path of a tenant, itself first: `a/b/c` → [`a/b/c`, `a/b`, `a`]. */
export function tenantChain(tenant: string): string[] {
  const parts = tenant.split('/');
  return parts.map((_, i) => parts.slice(0, parts.length - i).join('/'));
}

/** Proper ancestors of a tenant path, nearest first: `a/b/c` → [`a/b`, `a`]. */
export function tenantAncestors(tenant: string): string[] {
  return tenantChain(tenant).slice(1);
}

/** Whether `tenant` is `owner` or below it. */
export function inSubtree(tenant: string, owner: string): boolean {
  return tenant === owner || tenant.startsWith(`${owner}/`);
}

/** A SQL LIKE pattern for the proper descendants of `owner` (its LIKE metacharacters escaped). */
export function descendantsLikePattern(owner: string): string {
  return `${owner.replace(/[\\%_]/g, (c) => `\\${c}`)}/%`;
}
