// Cursor pagination: a page's `nextCursor` is an opaque base64url token of the last row's
// (createdAt, id); the next page starts strictly after it in the listing's order.
import { badInput } from '../errors';

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;

export function pageLimit(limit: string | undefined): number {
  if (limit === undefined) return DEFAULT_PAGE;
  const n = Number(limit);
  if (!Number.isInteger(n) || n < 1 || n > MAX_PAGE) throw badInput([{ field: 'limit', rule: `must be an integer from 1 to ${MAX_PAGE}` }]);
  return n;
}

export function encodeCursor(c: { createdAt: string; id: string }): string {
  return Buffer.from(JSON.stringify([c.createdAt, c.id])).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): { createdAt: string; id: string } | undefined {
  if (cursor === undefined) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && !Number.isNaN(Date.parse(v[0])) && typeof v[1] === 'string')
      return { createdAt: v[0], id: v[1] };
  } catch {
    // fall through to the refusal
  }
  throw badInput([{ field: 'cursor', rule: "must be a previous page's nextCursor, unchanged" }]);
}
