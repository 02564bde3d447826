// Hierarchical quota: tables of small tenant trees, plus a property that admitted usage
// never breaks a limit or a cohort pool, checked by an independent model of the rules.
import fc from 'fast-check';
import {
  applyCharge,
  checkQuota,
  describeUsage,
  quotaKey,
  quotaKeysFor,
  usageLimitMilli,
  validateQuotaRules,
  type QuotaRule,
} from '../../scheduling/quota';

const rule = (tenant: string, nominal: number, extra: Partial<QuotaRule> = {}): QuotaRule => ({
  tenant,
  acceleratorType: 'H100',
  nominal,
  borrowingLimit: null,
  lendingLimit: null,
  ...extra,
});

/** acme 16 split into teams a 8 and b 8, unless overridden. */
const acme = (org: Partial<QuotaRule> = {}, a: Partial<QuotaRule> = {}, b: Partial<QuotaRule> = {}): QuotaRule[] => [
  rule('acme', 16, org),
  rule('acme/a', 8, a),
  rule('acme/b', 8, b),
];

/** Checks and, when admitted, charges; returns the decision. */
function admit(rules: QuotaRule[], usage: Map<string, number>, tenant: string, milli: number, type = 'H100') {
  const d = checkQuota(rules, usage, tenant, type, milli);
  if (d.ok) applyCharge(usage, d.charge, milli);
  return d;
}

const used = (usage: Map<string, number>, tenant: string, type = 'H100'): number => usage.get(quotaKey(tenant, type)) ?? 0;
const reasonOf = (d: ReturnType<typeof checkQuota>): string => (d.ok ? '(admitted)' : d.reason);

describe('quota admission', () => {
  test('a team within its nominal is admitted and charged to itself and its org, leaf first', () => {
    const usage = new Map<string, number>();
    expect(admit(acme(), usage, 'acme/a', 8000)).toEqual({ ok: true, charge: ['acme/a|H100', 'acme|H100'] });
    expect(used(usage, 'acme/a')).toBe(8000);
    expect(used(usage, 'acme')).toBe(8000);
    expect(used(usage, 'acme/b')).toBe(0);
  });

  test('a team borrows from an idle sibling up to the whole cohort', () => {
    const usage = new Map<string, number>();
    expect(admit(acme(), usage, 'acme/a', 12000).ok).toBe(true);
    expect(admit(acme(), usage, 'acme/a', 4000).ok).toBe(true);
    expect(reasonOf(admit(acme(), usage, 'acme/a', 1000))).toBe(
      'over quota: acme/a would borrow 1 H100 but cohort acme has 0 idle to lend',
    );
  });

  test('borrowing stops at the borrowing limit, and the reason says so with the usage before the request', () => {
    const rules = [rule('acme', 128), rule('acme/a', 64, { borrowingLimit: 16 }), rule('acme/b', 64)];
    const usage = new Map([
      [quotaKey('acme/a', 'H100'), 64000],
      [quotaKey('acme', 'H100'), 64000],
    ]);
    expect(reasonOf(checkQuota(rules, usage, 'acme/a', 'H100', 17000))).toBe(
      'over quota: acme/a uses 64 of nominal 64 H100, borrowing limit 16 reached',
    );
    expect(checkQuota(rules, usage, 'acme/a', 'H100', 16000).ok).toBe(true);
  });

  test('a node with no ruled ancestor cannot go above its nominal', () => {
    const rules = [rule('acme', 100)];
    const usage = new Map([[quotaKey('acme', 'H100'), 100000]]);
    expect(reasonOf(checkQuota(rules, usage, 'acme', 'H100', 1000))).toBe(
      'over quota: acme uses 100 of nominal 100 H100 and has no cohort to borrow from',
    );
  });

  test("a sibling's lending limit caps what can be borrowed from it", () => {
    const rules = acme({}, {}, { lendingLimit: 2 });
    expect(reasonOf(checkQuota(rules, new Map(), 'acme/a', 'H100', 11000))).toBe(
      'over quota: acme/a would borrow 11 H100 but cohort acme has 10 idle to lend',
    );
    const usage = new Map<string, number>();
    expect(admit(rules, usage, 'acme/a', 10000).ok).toBe(true);
    expect(reasonOf(admit(rules, usage, 'acme/a', 1000))).toBe('over quota: acme/a would borrow 1 H100 but cohort acme has 0 idle to lend');
  });

  test('a lending limit above nominal lends no more than the nominal', () => {
    const rules = acme({ nominal: 100 }, {}, { lendingLimit: 20 });
    // Pool: a 8 + b min(20, 8) + acme's unassigned 84 = 100, not 112.
    expect(checkQuota(rules, new Map(), 'acme/a', 'H100', 100000).ok).toBe(true);
    const usage = new Map([
      [quotaKey('acme/b', 'H100'), 8000],
      [quotaKey('acme', 'H100'), 8000],
    ]);
    expect(reasonOf(checkQuota(rules, usage, 'acme/a', 'H100', 93000))).toBe(
      'over quota: acme/a would borrow 93 H100 but cohort acme has 92 idle to lend',
    );
  });

  test('usage within the part a team never lends is protected from borrowers', () => {
    const rules = acme({}, {}, { lendingLimit: 2 });
    const usage = new Map<string, number>();
    expect(admit(rules, usage, 'acme/a', 10000).ok).toBe(true); // a took all it may borrow
    expect(admit(rules, usage, 'acme/b', 6000).ok).toBe(true); // b still gets its guaranteed 6
    expect(reasonOf(admit(rules, usage, 'acme/b', 1000))).toBe('over quota: acme/b would borrow 1 H100 but cohort acme has 0 idle to lend');

    // And in the other order: b using its guaranteed part leaves what a can borrow unchanged.
    const usage2 = new Map<string, number>();
    expect(admit(rules, usage2, 'acme/b', 6000).ok).toBe(true);
    expect(admit(rules, usage2, 'acme/a', 10000).ok).toBe(true);
  });

  test('a team within its nominal with nothing to lend still fits when the cohort is idle', () => {
    const rules = acme({}, { lendingLimit: 0 }, { lendingLimit: 0 });
    const usage = new Map<string, number>();
    expect(admit(rules, usage, 'acme/a', 8000).ok).toBe(true);
    expect(admit(rules, usage, 'acme/b', 8000).ok).toBe(true);
    expect(admit(rules, usage, 'acme/a', 1000).ok).toBe(false);
  });

  test('the org nominal not handed to any team can be borrowed', () => {
    expect(checkQuota(acme({ nominal: 20 }), new Map(), 'acme/a', 'H100', 20000).ok).toBe(true);
    expect(reasonOf(checkQuota(acme({ nominal: 16 }), new Map(), 'acme/a', 'H100', 20000))).toBe(
      'over quota: acme/a would borrow 20 H100 but cohort acme has 16 idle to lend',
    );
  });

  test('the org nominal caps the sum of its teams even when the teams are overcommitted', () => {
    const rules = acme({ nominal: 10 });
    const usage = new Map<string, number>();
    expect(admit(rules, usage, 'acme/a', 8000).ok).toBe(true);
    expect(admit(rules, usage, 'acme/b', 2000).ok).toBe(true);
    expect(reasonOf(admit(rules, usage, 'acme/b', 1000))).toBe(
      'over quota: acme uses 10 of nominal 10 H100 and has no cohort to borrow from',
    );
  });

  test('a project borrows within its team, and the team limit binds usage from anywhere in its subtree', () => {
    const rules = [
      rule('acme', 16),
      rule('acme/a', 8, { borrowingLimit: 2 }),
      rule('acme/a/p1', 4),
      rule('acme/a/p2', 2),
      rule('acme/b', 8),
    ];
    const usage = new Map<string, number>();
    expect(admit(rules, usage, 'acme/a/p1', 4000)).toEqual({ ok: true, charge: ['acme/a/p1|H100', 'acme/a|H100', 'acme|H100'] });
    // Team a's cohort holds p1 4 + p2 2 + a's unassigned 2 = 8.
    expect(admit(rules, usage, 'acme/a/p1', 4000).ok).toBe(true);
    expect(reasonOf(admit(rules, usage, 'acme/a/p2', 1000))).toBe(
      'over quota: acme/a/p2 would borrow 1 H100 but cohort acme/a has 0 idle to lend',
    );
    // A tenant without its own rule is charged to its ruled ancestors only.
    expect(admit(rules, usage, 'acme/a/p9', 2000)).toEqual({ ok: true, charge: ['acme/a|H100', 'acme|H100'] });
    expect(reasonOf(admit(rules, usage, 'acme/a/p9', 1000))).toBe(
      'over quota: acme/a uses 10 of nominal 8 H100, borrowing limit 2 reached',
    );
    expect([used(usage, 'acme/a/p1'), used(usage, 'acme/a/p2'), used(usage, 'acme/a'), used(usage, 'acme')]).toEqual([
      8000, 0, 10000, 10000,
    ]);
    expect(admit(rules, usage, 'acme/b', 6000).ok).toBe(true);
    expect(admit(rules, usage, 'acme/b', 1000).ok).toBe(false); // the org is full
  });

  test('a type without rules on the path is not governed by quota', () => {
    expect(checkQuota(acme(), new Map(), 'acme/a', 'A100', 1_000_000)).toEqual({ ok: true, charge: [] });
    expect(quotaKeysFor(acme(), 'acme/a', 'A100')).toEqual([]);
  });

  test('a tenant with no rules anywhere is unlimited', () => {
    expect(checkQuota(acme(), new Map(), 'globex/x', 'H100', 1_000_000)).toEqual({ ok: true, charge: [] });
  });

  test('rules of another type never take part', () => {
    const rules = [...acme(), { ...rule('acme/b', 1000), acceleratorType: 'A100' }, { ...rule('acme/a/p1', 0), acceleratorType: 'A100' }];
    expect(checkQuota(rules, new Map(), 'acme/a/p1', 'H100', 16000)).toEqual({ ok: true, charge: ['acme/a|H100', 'acme|H100'] });
    expect(checkQuota(rules, new Map(), 'acme/a/p1', 'A100', 1).ok).toBe(false);
  });

  test('quotaKeysFor locks the path and every cohort member once, sorted', () => {
    const rules = [
      rule('acme', 16),
      rule('acme/a', 8),
      rule('acme/a/p1', 4),
      rule('acme/a/p2', 4),
      rule('acme/b', 8),
      rule('acme/c/x', 1), // joins acme's cohort through the unruled acme/c
      rule('acme/b/p1', 4), // another cohort: not needed
      rule('globex', 4),
      { ...rule('acme/a/p3', 4), acceleratorType: 'A100' },
    ];
    expect(quotaKeysFor(rules, 'acme/a/p1', 'H100')).toEqual([
      'acme/a/p1|H100',
      'acme/a/p2|H100',
      'acme/a|H100',
      'acme/b|H100',
      'acme/c/x|H100',
      'acme|H100',
    ]);
    expect(quotaKeysFor(rules, 'acme', 'H100')).toEqual(['acme|H100']);
    expect(quotaKeysFor(rules, 'acme/c/y', 'H100')).toEqual(['acme|H100']);
    expect(quotaKeysFor(rules, 'nobody', 'H100')).toEqual([]);
  });

  test('a rule under an unruled node lends to its nearest ruled ancestor’s cohort', () => {
    const rules = [rule('acme', 10), rule('acme/a', 5), rule('acme/c/x', 5)];
    expect(checkQuota(rules, new Map(), 'acme/a', 'H100', 10000).ok).toBe(true);
    expect(checkQuota(rules, new Map([[quotaKey('acme/c/x', 'H100'), 5000]]), 'acme/a', 'H100', 5001).ok).toBe(false);
  });

  test('a release restores usage and lets a sibling borrow again', () => {
    const rules = acme();
    const usage = new Map<string, number>();
    const d = admit(rules, usage, 'acme/a', 16000);
    expect(d.ok).toBe(true);
    expect(admit(rules, usage, 'acme/b', 1000).ok).toBe(false);
    if (d.ok) applyCharge(usage, d.charge, -16000);
    expect([used(usage, 'acme/a'), used(usage, 'acme')]).toEqual([0, 0]);
    expect(admit(rules, usage, 'acme/b', 16000).ok).toBe(true);
  });

  test('releasing more than was charged is refused and changes nothing', () => {
    const usage = new Map([
      ['acme/a|H100', 1000],
      ['acme|H100', 3000],
    ]);
    expect(() => applyCharge(usage, ['acme/a|H100', 'acme|H100'], -2000)).toThrow(/acme\/a\|H100 would make its usage negative/);
    expect(usage).toEqual(
      new Map([
        ['acme/a|H100', 1000],
        ['acme|H100', 3000],
      ]),
    );
  });

  test('fractional requests count as fractions of a device', () => {
    const usage = new Map<string, number>();
    const solo = [rule('acme', 1)];
    expect(admit(solo, usage, 'acme', 500).ok).toBe(true);
    expect(admit(solo, usage, 'acme', 500).ok).toBe(true);
    expect(reasonOf(admit(solo, usage, 'acme', 1))).toBe('over quota: acme uses 1 of nominal 1 H100 and has no cohort to borrow from');

    const usage2 = new Map<string, number>();
    const pair = acme({ nominal: 2 }, { nominal: 1 }, { nominal: 1 });
    expect(admit(pair, usage2, 'acme/a', 500).ok).toBe(true);
    expect(reasonOf(admit(pair, usage2, 'acme/a', 1501))).toBe(
      'over quota: acme/a would borrow 1.501 H100 but cohort acme has 1.5 idle to lend',
    );
  });

  test('a request must be a positive whole number of milli-devices', () => {
    for (const bad of [0, -1000, 1.5, Number.NaN, Infinity]) {
      expect(() => checkQuota(acme(), new Map(), 'acme/a', 'H100', bad)).toThrow(/positive integer number of milli-devices/);
    }
  });

  test('malformed rules and tenant paths are rejected with the field and value', () => {
    expect(() => checkQuota([...acme(), rule('acme/a', 4)], new Map(), 'acme/a', 'H100', 1)).toThrow(
      'duplicate quota rule for tenant acme/a and type H100',
    );
    expect(() => checkQuota([rule('acme', -1)], new Map(), 'acme', 'H100', 1)).toThrow(
      'quota rule acme|H100: nominal must be a whole number of devices ≥ 0, got -1',
    );
    expect(() => checkQuota(acme(), new Map(), 'acme//a', 'H100', 1)).toThrow(/no empty segments, got "acme\/\/a"/);
    expect(() => validateQuotaRules([rule('acme', 1, { lendingLimit: 0.5 })])).toThrow(/lendingLimit must be a whole number/);
    expect(() => validateQuotaRules(acme())).not.toThrow();
  });

  test('describeUsage and usageLimitMilli show the limits', () => {
    expect(describeUsage(rule('acme/a', 64, { borrowingLimit: 16 }), 64000)).toBe('acme/a uses 64 of nominal 64 H100 (borrowing limit 16)');
    expect(describeUsage(rule('acme/a', 8, { lendingLimit: 2 }), 2500)).toBe(
      'acme/a uses 2.5 of nominal 8 H100 (no borrowing limit, lending limit 2)',
    );
    expect(usageLimitMilli(rule('acme/a', 64, { borrowingLimit: 16 }))).toBe(80000);
    expect(usageLimitMilli(rule('acme/a', 64))).toBe(Infinity);
  });
});

// ---- property: admissions never break a limit -------------------------------------------

const TENANTS = ['x', 'x/a', 'x/a/p1', 'x/a/p2', 'x/b', 'x/b/p1', 'x/c', 'x/c/p1', 'y', 'y/a', 'y/a/p1', 'z'];
const TYPES = ['H100', 'A100'];

/** Independent model of the limits, written from the definitions rather than the module. */
function violations(rules: readonly QuotaRule[], usage: ReadonlyMap<string, number>): string[] {
  const out: string[] = [];
  for (const type of TYPES) {
    const ruled = new Map(rules.filter((r) => r.acceleratorType === type).map((r) => [r.tenant, r]));
    const u = (t: string): number => usage.get(`${t}|${type}`) ?? 0;
    const parentOf = (t: string): string | undefined => {
      const segs = t.split('/');
      for (let i = segs.length - 1; i > 0; i--) if (ruled.has(segs.slice(0, i).join('/'))) return segs.slice(0, i).join('/');
      return undefined;
    };
    for (const r of ruled.values()) {
      const limit =
        parentOf(r.tenant) === undefined ? r.nominal * 1000 : r.borrowingLimit === null ? Infinity : (r.nominal + r.borrowingLimit) * 1000;
      if (u(r.tenant) > limit) out.push(`${r.tenant}|${type} uses ${u(r.tenant)} > ${limit}`);
    }
    for (const p of ruled.values()) {
      const members = [...ruled.values()].filter((m) => parentOf(m.tenant) === p.tenant);
      if (members.length === 0) continue;
      const lend = (m: QuotaRule): number => Math.min(m.nominal, m.lendingLimit ?? m.nominal) * 1000;
      const pool =
        members.reduce((s, m) => s + lend(m), 0) + Math.max(0, p.nominal * 1000 - members.reduce((s, m) => s + m.nominal * 1000, 0));
      const use = members.reduce((s, m) => s + Math.max(0, u(m.tenant) - (m.nominal * 1000 - lend(m))), 0);
      if (use > pool) out.push(`cohort ${p.tenant}|${type} uses ${use} > pool ${pool}`);
    }
  }
  return out;
}

/** Expected subtree usage per rule from the live admissions, to check the charge itself. */
function expectedUsage(rules: readonly QuotaRule[], live: readonly { tenant: string; type: string; milli: number }[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of rules) {
    const inSubtree = live.filter((a) => a.type === r.acceleratorType && (a.tenant === r.tenant || a.tenant.startsWith(`${r.tenant}/`)));
    m.set(
      quotaKey(r.tenant, r.acceleratorType),
      inSubtree.reduce((s, a) => s + a.milli, 0),
    );
  }
  return m;
}

const ruleArb = (tenant: string, acceleratorType: string): fc.Arbitrary<QuotaRule | null> =>
  fc.option(
    fc.record({
      tenant: fc.constant(tenant),
      acceleratorType: fc.constant(acceleratorType),
      nominal: fc.integer({ min: 0, max: 8 }),
      borrowingLimit: fc.option(fc.integer({ min: 0, max: 6 }), { nil: null }),
      lendingLimit: fc.option(fc.integer({ min: 0, max: 10 }), { nil: null }),
    }),
    { nil: null, freq: 3 },
  );

const rulesArb: fc.Arbitrary<QuotaRule[]> = fc
  .tuple(...TENANTS.filter((t) => t !== 'z' && t !== 'x/c').flatMap((t) => TYPES.map((ty) => ruleArb(t, ty))))
  .map((rs) => rs.filter((r): r is QuotaRule => r !== null));

type Op = { kind: 'admit'; tenant: string; type: string; milli: number } | { kind: 'release'; pick: number };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('admit' as const),
      tenant: fc.constantFrom(...TENANTS),
      type: fc.constantFrom(...TYPES),
      milli: fc.integer({ min: 1, max: 6000 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }) },
);

test('admitted usage never exceeds a node limit or a cohort pool, and charges exactly the ruled ancestors', () => {
  fc.assert(
    fc.property(rulesArb, fc.array(opArb, { maxLength: 40 }), (rules, ops) => {
      const usage = new Map<string, number>();
      const live: { tenant: string; type: string; milli: number; charge: string[] }[] = [];
      for (const op of ops) {
        if (op.kind === 'admit') {
          const d = checkQuota(rules, usage, op.tenant, op.type, op.milli);
          if (!d.ok) {
            expect(d.reason).toMatch(/^over quota: \S+ (uses|would borrow) /);
            continue;
          }
          applyCharge(usage, d.charge, op.milli);
          live.push({ ...op, charge: d.charge });
        } else if (live.length > 0) {
          const [gone] = live.splice(op.pick % live.length, 1);
          applyCharge(usage, gone.charge, -gone.milli);
        }
        expect(violations(rules, usage)).toEqual([]);
        for (const [key, milli] of expectedUsage(rules, live)) expect(usage.get(key) ?? 0).toBe(milli);
      }
    }),
    { numRuns: 200 },
  );
});
