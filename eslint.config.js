// Lint rules that hold the house style (see docs/architecture.md "Dependency rules").
// Type-aware: promises must be awaited or voided on purpose, switches over unions exhaustive.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

/** `no-restricted-imports` patterns for one layer. */
const forbid = (...groups) => ({
  'no-restricted-imports': ['error', { patterns: groups.map(([group, message]) => ({ group, message })) }],
})

/** Store methods that write instance rows, owners or assignments (src/store/store.ts). */
const INSTANCE_WRITES = [
  'insertInstance',
  'updateInstance',
  'deleteInstance',
  'assignWarm',
  'openAssignment',
  'closeAssignment',
  'claimWarm',
]
const NO_DIALECT = {
  selector: "MemberExpression[property.name='dialect']",
  message: 'only src/store/ knows the dialect; add a Store method whose adapter decides (src/store/adapter.ts)',
}
const NO_INSTANCE_WRITES = {
  selector: `MemberExpression[property.name=/^(${INSTANCE_WRITES.join('|')})$/]`,
  message: 'instance state is written by the pool only (src/pool/pool-*.ts): call the PoolService',
}
const NO_DIRECT_TRANSITION = {
  selector: 'MemberExpression[property.name=/^(updateInstance|insertInstance)$/]',
  message: 'write instance state as a named transition (domain/transitions.ts) with PoolCore.apply/insert',
}

/** The Kubernetes client is the kubernetes provider's alone (issue 15); every other layer's rule adds this group. */
const NO_KUBE_CLIENT = [['@kubernetes/*'], 'only src/providers/kubernetes imports the Kubernetes client']

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
    rules: forbid([['../*', '!../domain/*'], 'domain/ imports nothing outside domain/'], NO_KUBE_CLIENT),
  },
  // src/cost/ is pure cost logic (prices, accrual, budgets): like domain/, it reads no store, pool or config.
  {
    files: ['src/cost/**/*.ts'],
    rules: forbid([
      ['api', 'cli', 'config', 'gateway', 'pool', 'providers', 'store', 'web']
        .flatMap((d) => [`../${d}/*`, `../${d}/**`])
        .concat(['../*.js']),
      'cost/ imports only domain/ and cost/ (pure logic, no I/O)',
    ]),
  },
  {
    files: ['src/providers/**/*.ts'],
    rules: forbid(
      [['**/store/*', '**/store/**'], 'providers never import the store'],
      [['**/pool/*', '**/pool/**'], 'providers never import the pool'],
      NO_KUBE_CLIENT,
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
      ...(p === 'kubernetes' ? [] : [NO_KUBE_CLIENT]),
    ),
  })),
  {
    files: ['src/gateway/**/*.ts'],
    rules: forbid(
      [
        ['**/pool/*', '**/pool/**', '**/store/*', '**/store/**', '**/providers/*', '**/providers/**'],
        'the gateway never imports the pool, the store or a provider',
      ],
      NO_KUBE_CLIENT,
    ),
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/domain/**', 'src/providers/**', 'src/gateway/**', 'src/**/*.test.ts'],
    rules: forbid(NO_KUBE_CLIENT),
  },
  // Two doors, held here (flat config replaces a rule per file, so each block lists all it needs):
  // - nothing outside the store knows which dialect runs: what differs is behind its adapter
  //   (src/store/adapter.ts), so `.dialect` is read only inside src/store/;
  // - the pool decides everything (issue 10): instance state, owners and assignments are written by
  //   the pool only, and inside it only as named transitions (domain/transitions.ts) through
  //   PoolCore.apply / PoolCore.insert. The worker hands what it finds to the pool.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/store/**'],
    rules: { 'no-restricted-syntax': ['error', NO_DIALECT, NO_INSTANCE_WRITES] },
  },
  {
    files: ['src/pool/pool-*.ts'],
    ignores: ['src/pool/pool-core.ts'],
    rules: { 'no-restricted-syntax': ['error', NO_DIALECT, NO_DIRECT_TRANSITION] },
  },
  {
    files: ['src/pool/pool-core.ts', 'src/pool/recover.ts'],
    rules: { 'no-restricted-syntax': ['error', NO_DIALECT] },
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
