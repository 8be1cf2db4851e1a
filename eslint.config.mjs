// ESLint flat config: a small rule set, each rule with the reason it is here. `npm run lint`
// runs it; .ci/run runs it before the tests, and a finding fails CI.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';

// import.meta.dirname needs Node 20.11; package.json allows any Node 20.
const root = path.dirname(fileURLToPath(import.meta.url));

// `x as unknown as T`, or the same with `<T>` assertions (`<T><unknown>x`, mixed forms too).
const ASSERTION = ':matches(TSAsExpression, TSTypeAssertion)';
const DOUBLE_CAST = `${ASSERTION} > ${ASSERTION}[typeAnnotation.type="TSUnknownKeyword"]`;

export default tseslint.config(
  // Build outputs, installed packages and generated data are not source.
  { ignores: ['dist/**', 'node_modules/**', 'native/build/**', 'runs/**', 'out/**', 'data/corpus/**', 'data/prepared/**', 'bench-results/**', '.scratch/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      // Type information (tsconfig.json) for the promise rules below.
      parserOptions: { projectService: true, tsconfigRootDir: root },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    // A disable comment that no longer suppresses anything is stale and misleads the reader.
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // `x as unknown as T` turns off type checking for x. Reaching past tfjs' public types
      // happens in one typed adapter (core/tfjsInternals.ts), not scattered through the code.
      'no-restricted-syntax': ['error', { selector: DOUBLE_CAST, message: 'no `as unknown as` outside core/tfjsInternals.ts: add a typed accessor there, or fix the types' }],
      // Training is bitwise deterministic: every random number comes from a seeded stream
      // (core/rng.ts), never from Math.random.
      'no-restricted-properties': ['error', { object: 'Math', property: 'random', message: 'use a seeded RngStream (core/rng.ts): training and tests must be reproducible' }],
      // An unhandled rejection kills the process (servers, ws collectives, launchers): every
      // promise is awaited, returned, or given a .catch.
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function passed where a void callback is expected (http/ws handlers, timers)
      // loses its rejection.
      '@typescript-eslint/no-misused-promises': 'error',
      // Unused variables and imports are dead code or a bug (a value computed and never used);
      // a leading underscore marks one kept on purpose (a positional argument, a rest sibling).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      // `any` switches type checking off silently; `unknown` forces a check where it is read.
      '@typescript-eslint/no-explicit-any': 'error',
      // @ts-ignore / @ts-nocheck hide errors; @ts-expect-error must say why.
      '@typescript-eslint/ban-ts-comment': 'error',
      // require() is untyped; the few lazy loads of optional packages say so with a disable comment.
      '@typescript-eslint/no-require-imports': 'error',
      // == coerces ('' == 0); `== null` (null or undefined) stays allowed.
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // An empty block swallows an error or hides unfinished code; an empty catch needs a comment.
      'no-empty': 'error',
      // let/var for a binding that never changes misleads the reader.
      'prefer-const': 'error',
      'no-var': 'error',
    },
  },
  // Tests poke at internals on purpose (fake backends, corrupted inputs): casts stay allowed there.
  { files: ['spec/**/*.ts', 'core/tfjsInternals.ts'], rules: { 'no-restricted-syntax': 'off' } },
);
