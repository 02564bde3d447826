// Reservation rules at placement time: other tenants' standard and premium work may not eat into
// the idle part of a reservation; basic work may (it is preempted when the owner comes).
import { recordPlacement, reservationBlock, type ActiveReservation, type TypeFigures } from '../../scheduling/reservations';

const r = (tenant: string, devices: number, type = 'H100'): ActiveReservation => ({
  id: `${tenant}-${type}`,
  tenant,
  acceleratorType: type,
  devices,
  endsAt: new Date('2026-12-04T00:00:00Z'),
});
const figures = (freeMilli: number, basicMilli = 0, owner: Record<string, number> = {}): TypeFigures => ({
  freeMilli,
  basicMilli,
  ownerMilli: new Map(Object.entries(owner)),
});

describe('reservation rules', () => {
  test('a job of the owner subtree may use its reservation', () => {
    expect(reservationBlock([r('acme', 8)], figures(8000), { tenant: 'acme/ml', tier: 'premium' }, 'H100', 8000)).toBeUndefined();
  });

  test("another tenant's standard job may not take the idle reserved devices", () => {
    const why = reservationBlock([r('acme', 8)], figures(10_000), { tenant: 'zeta', tier: 'standard' }, 'H100', 4000);
    expect(why).toBe('capacity reserved: 8 H100 reserved for acme until 2026-12-04T00:00:00.000Z, 8 idle; 2 left for others');
  });

  test('another tenant may use what lies beyond the reservation', () => {
    expect(reservationBlock([r('acme', 8)], figures(10_000), { tenant: 'zeta', tier: 'standard' }, 'H100', 2000)).toBeUndefined();
  });

  test('basic work may use idle reserved capacity', () => {
    expect(reservationBlock([r('acme', 8)], figures(8000), { tenant: 'zeta', tier: 'basic' }, 'H100', 8000)).toBeUndefined();
  });

  test('devices basic work holds count as reclaimable for the owner', () => {
    expect(reservationBlock([r('acme', 8)], figures(6000, 4000), { tenant: 'zeta', tier: 'standard' }, 'H100', 2000)).toBeUndefined();
  });

  test('a reservation the owner already uses has no idle part to protect', () => {
    expect(
      reservationBlock([r('acme', 8)], figures(2000, 0, { 'acme-H100': 8000 }), { tenant: 'zeta', tier: 'premium' }, 'H100', 2000),
    ).toBeUndefined();
  });

  test('reservations of other types play no part', () => {
    expect(reservationBlock([r('acme', 8, 'A100')], figures(0), { tenant: 'zeta', tier: 'premium' }, 'H100', 8000)).toBeUndefined();
  });

  test("a tenant whose name only starts like the owner's is not in its subtree", () => {
    expect(reservationBlock([r('acme', 8)], figures(8000), { tenant: 'acme-labs', tier: 'standard' }, 'H100', 1000)).toMatch(
      /^capacity reserved/,
    );
  });

  test('recording placements keeps the figures current within a transaction', () => {
    const f = figures(16_000);
    const rs = [r('acme', 8)];
    recordPlacement(rs, f, { tenant: 'acme/ml', tier: 'standard' }, 'H100', 4000);
    recordPlacement(rs, f, { tenant: 'zeta', tier: 'basic' }, 'H100', 2000);
    expect(f.freeMilli).toBe(10_000);
    expect(f.ownerMilli.get('acme-H100')).toBe(4000);
    expect(f.basicMilli).toBe(2000);
    // 4 of the 8 reserved are idle; 10 free + 2 basic − 4 idle leaves 8 for others.
    expect(reservationBlock(rs, f, { tenant: 'zeta', tier: 'standard' }, 'H100', 8000)).toBeUndefined();
    expect(reservationBlock(rs, f, { tenant: 'zeta', tier: 'standard' }, 'H100', 9000)).toMatch(/8 left for others$/);
  });
});
