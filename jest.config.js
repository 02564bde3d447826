/** Unit tests run in-process; integration tests use the real PostgreSQL and a real Temporal dev server. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' } }] },
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  testTimeout: 120000,
  maxWorkers: 2,
  // The Temporal SDK's native runtime keeps handles open after the last test; nothing of ours is left running.
  forceExit: true,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
};
