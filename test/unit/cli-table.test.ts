// The CLI's human output: aligned tables, fields and short durations.
import { percent, renderFields, renderTable, shortDuration } from '../../api/cli/table';

describe('renderTable', () => {
  test('columns are padded to their widest cell, numbers right-aligned, the last column unpadded', () => {
    expect(
      renderTable(
        ['JOB', 'PRIO', 'REASON'],
        [
          ['a', 5, 'waits for capacity'],
          ['long-job', 12, null],
        ],
      ),
    ).toBe(['JOB       PRIO  REASON', 'a            5  waits for capacity', 'long-job    12  -', ''].join('\n'));
  });

  test('missing and empty cells print as a dash; an empty table says so', () => {
    expect(renderTable(['A', 'B'], [[undefined, '']])).toBe('A  B\n-  -\n');
    expect(renderTable(['A'], [], '(no jobs)')).toBe('(no jobs)\n');
  });

  test('a column with any text is left-aligned even when some cells are numbers', () => {
    expect(
      renderTable(
        ['X', 'Y'],
        [
          [1, 'a'],
          ['none', 'b'],
        ],
      ),
    ).toBe('X     Y\n1     a\nnone  b\n');
  });
});

test('fields are aligned on their keys and undefined ones left out', () => {
  expect(
    renderFields([
      ['job', 'j1'],
      ['placement', undefined],
      ['waiting', null],
      ['priority', 3],
    ]),
  ).toBe('job:      j1\nwaiting:  -\npriority: 3\n');
});

test.each([
  [0, '0 s'],
  [89, '89 s'],
  [90, '2 min'],
  [3600, '60 min'],
  [5400, '1.5 h'],
  [40 * 3600, '1.7 d'],
  [-1, '-'],
  [Number.NaN, '-'],
])('shortDuration(%p) is %p', (s, want) => {
  expect(shortDuration(s)).toBe(want);
});

test('percent rounds a ratio to a whole percentage', () => {
  expect(percent(0.375)).toBe('38%');
  expect(percent(Number.POSITIVE_INFINITY)).toBe('-');
});
