// Lint rules that hold the house style (see docs/architecture.md "Dependency rules").
// Type-aware: promises must be awaited or voided on purpose, switches over unions exhaustive.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

/** `no-restricted-imports` patterns for one layer. */
const forbid = (...groups) => ({
  'no-restricted-imports': ['error', { patterns: groups.map(([group, message]) => ({ group, message })) }],
})

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'examples/**', '**/fixtures/**', 'src/demo-app/server.mjs', '.dbg/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*.js', 'bin/*.js', 'scripts/*.mjs', 'bench/*.mjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': [
        'error',
        { checksVoidReturn: { arguments: false, properties: false } },
      ],
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      'no-empty': ['error', { allowEmptyCatch: true }],
      'no-control-regex': 'off',
    },
  },
  // Size: a file over ~400 lines or a function over ~80 is split, or says why in an
  // `eslint-disable-next-line max-lines-per-function -- <why>` comment.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/**/*.test.ts'],
    rules: {
      'max-lines': ['warn', { max: 400, skipBlankLines: true, skipComments: true }],
      'max-lines-per-function': ['warn', { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }],
    },
  },
  // Dependency directions. domain/ imports nothing of ours; providers import neither the store nor
  // each other; the gateway never imports pool, store or providers.
  {
    files: ['src/domain/**/*.ts'],
    rules: forbid([['../*', '!../domain/*'], 'domain/ imports nothing outside domain/']),
  },
  {
    files: ['src/providers/**/*.ts'],
    rules: forbid(
      [['**/store/*', '**/store/**'], 'providers never import the store'],
      [['**/pool/*', '**/pool/**'], 'providers never import the pool'],
    ),
  },
  ...['local', 'ec2', 'docker', 'fake', 'slurm', 'kubernetes'].map((p) => ({
    files: [`src/providers/${p}/**/*.ts`],
    rules: forbid(
      [['**/store/*', '**/store/**'], 'providers never import the store'],
      [['**/pool/*', '**/pool/**'], 'providers never import the pool'],
      [
        ['local', 'ec2', 'docker', 'fake', 'slurm', 'kubernetes']
          .filter((o) => o !== p)
          .flatMap((o) => [`../${o}/*`, `../${o}`, `**/providers/${o}/**`]),
        'a provider never imports another provider',
      ],
    ),
  })),
  {
    files: ['src/gateway/**/*.ts'],
    rules: forbid([
      ['**/pool/*', '**/pool/**', '**/store/*', '**/store/**', '**/providers/*', '**/providers/**'],
      'the gateway never imports the pool, the store or a provider',
    ]),
  },
  // Nothing outside the store knows which dialect runs: what differs is behind its adapter
  // (src/store/adapter.ts), so `store.dialect` is read only inside src/store/.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/store/**'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[property.name='dialect']",
          message: 'only src/store/ knows the dialect; add a Store method whose adapter decides (src/store/adapter.ts)',
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', 'src/**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-floating-promises': 'off',
      '@typescript-eslint/no-misused-promises': 'off',
      '@typescript-eslint/no-unused-vars': 'off',
      'no-restricted-imports': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        URL: 'readonly',
        performance: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        fetch: 'readonly',
        Buffer: 'readonly',
      },
    },
  },
)
