/** Unit tests run in-process; integration tests use the real PostgreSQL and a real Temporal dev server. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' } }],
    // jose and cookie (light-my-request's, for Fastify's inject) ship ES modules only, which jest cannot require: compiled to CommonJS like our own files.
    '/node_modules/(jose|cookie)/.+\\.js$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  transformIgnorePatterns: ['/node_modules/(?!(jose|cookie)/)'],
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  testTimeout: 120000,
  maxWorkers: 2,
  // The Temporal SDK's native runtime keeps handles open after the last test; nothing of ours is left running.
  forceExit: true,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
};
