/**
 * Prices (docs/cost.md "Prices"): the price table in ec2instances.info's instances.json shape (a
 * small fixture), the order in which a template's price is found (its own, live spot, the table,
 * rates per CPU-hour and GiB-hour from its requests), and the configuration that feeds them,
 * with clear errors for a table that cannot be used and a budget in another currency.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig } from '../../src/config/load.js'
import { parsePriceTable } from '../../src/cost/price-table.js'
import { rateFor, requestsOf, templateMarket, type PriceBook, type PricedTemplate } from '../../src/cost/prices.js'

const FIXTURE = fileURLToPath(new URL('../fixtures/ec2-instances.json', import.meta.url))
const table = parsePriceTable(readFileSync(FIXTURE, 'utf8'), { region: 'us-east-1', os: 'linux' })

const tpl = (o: Partial<PricedTemplate>): PricedTemplate => ({
  name: 't',
  provider: 'docker',
  pricePerHour: 0,
  settings: {},
  ...o,
})
const book: PriceBook = {
  table,
  rates: { docker: { cpuHour: 0.04, gibHour: 0.005 }, slurm: { cpuHour: 0.02, gibHour: 0 } },
}

test('the price table: on-demand and spot (spot_avg, else spot_min) per instance type in the region and os', () => {
  assert.deepEqual(table.get('t3.micro'), { onDemand: 0.0104, spot: 0.0031 })
  assert.deepEqual(table.get('m5.xlarge'), { onDemand: 0.192, spot: 0.0712 })
  assert.equal(table.has('p3.2xlarge'), false, 'no price in us-east-1')
  assert.equal(table.has('x9.weird'), false, 'N/A is no price')
  const eu = parsePriceTable(readFileSync(FIXTURE, 'utf8'), { region: 'eu-west-1', os: 'linux' })
  assert.deepEqual(eu.get('p3.2xlarge'), { onDemand: 3.305, spot: null })
  assert.throws(() => parsePriceTable('{"not":"a list"}', { region: 'us-east-1', os: 'linux' }), /expected an array/)
  assert.throws(() => parsePriceTable('[{', { region: 'us-east-1', os: 'linux' }), /not JSON/)
  assert.throws(
    () => parsePriceTable(readFileSync(FIXTURE, 'utf8'), { region: 'mars-1', os: 'linux' }),
    /no instance type has a price for region "mars-1"/,
  )
})

test("a template's price: its own first, then live spot, the table, the CPU and GiB rates, else none", () => {
  const own = { onDemandPerHour: 1.5, spotPerHour: 0.4, market: null, instanceType: null }
  assert.deepEqual(rateFor(tpl({ price: own }), 'on-demand', book), {
    perHour: 1.5,
    market: 'on-demand',
    source: 'template',
  })
  assert.deepEqual(rateFor(tpl({ price: own }), 'spot', book), { perHour: 0.4, market: 'spot', source: 'template' })
  // The old pricePerHour is the on-demand price.
  assert.equal(rateFor(tpl({ pricePerHour: 0.7 }), 'on-demand', book).perHour, 0.7)
  const ec2 = tpl({ provider: 'ec2', settings: { instanceType: 'm5.xlarge', spot: { enabled: true } } })
  assert.equal(templateMarket(ec2), 'spot')
  assert.deepEqual(rateFor(ec2, 'spot', book), { perHour: 0.0712, market: 'spot', source: 'table' })
  assert.deepEqual(rateFor(ec2, 'on-demand', book), { perHour: 0.192, market: 'on-demand', source: 'table' })
  assert.deepEqual(rateFor(ec2, 'spot', { ...book, liveSpot: (t) => (t === 'm5.xlarge' ? 0.065 : undefined) }), {
    perHour: 0.065,
    market: 'spot',
    source: 'live',
  })
  // Docker: 2 CPUs and 4 GiB at 0.04 and 0.005 → 0.1 per hour; Slurm's bare --mem number is MiB.
  const docker = tpl({ settings: { cpus: 2, memory: '4g' } })
  assert.deepEqual(requestsOf(docker), { cpus: 2, memoryGiB: 4 })
  assert.deepEqual(rateFor(docker, 'on-demand', book), { perHour: 0.1, market: 'on-demand', source: 'rates' })
  assert.deepEqual(requestsOf(tpl({ provider: 'slurm', settings: { cpus: 4, memory: '2048' } })), {
    cpus: 4,
    memoryGiB: 2,
  })
  assert.deepEqual(requestsOf(tpl({ settings: { resources: { requests: { cpu: '500m', memory: '512Mi' } } } })), {
    cpus: 0.5,
    memoryGiB: 0.5,
  })
  // The template's own `resources` win over what the provider settings say.
  assert.equal(
    rateFor(tpl({ settings: { cpus: 2 }, resources: { cpus: 8, memoryGiB: null } }), 'on-demand', book).perHour,
    0.32,
  )
  assert.deepEqual(rateFor(tpl({ provider: 'local' }), 'on-demand', book), {
    perHour: 0,
    market: 'on-demand',
    source: 'none',
  })
})

test('configuration: the table is read at start, prices and budgets decoded; problems named by path', () => {
  const cfg = loadConfig({
    text: `
cost:
  currency: EUR
  priceTable: { path: ${JSON.stringify(FIXTURE)} }
  rates: { docker: { cpuHour: 0.04, gibHour: 0.005 } }
  groups: { physics: [alice] }
budgets:
  - { scope: group, name: physics, amount: 200, period: month, mode: hard, stopRunning: { grace: 15m } }
  - { scope: pool, amount: 1000, period: 7d }
templates:
  gpu: { provider: ec2, price: { spotPerHour: 0.9, market: spot }, resources: { cpus: 8, memory: 16g } }
`,
    env: {},
    cwd: '/tmp',
  })
  assert.deepEqual(cfg.cost.table['t3.micro'], { onDemand: 0.0104, spot: 0.0031 })
  assert.equal(cfg.cost.currency, 'EUR')
  const [b0, b1] = cfg.budgets
  assert.equal(b0!.stopGraceMs, 15 * 60_000)
  assert.deepEqual(b0!.period, { kind: 'month' })
  assert.deepEqual(b1!.period, { kind: 'rolling', ms: 7 * 86_400_000 })
  assert.equal(b1!.mode, 'soft')
  assert.deepEqual(cfg.templates[0]!.price, {
    onDemandPerHour: null,
    spotPerHour: 0.9,
    market: 'spot',
    instanceType: null,
  })
  assert.deepEqual(cfg.templates[0]!.resources, { cpus: 8, memoryGiB: 16 })

  assert.throws(
    () =>
      loadConfig({
        text: `
cost: { priceTable: { path: /nonexistent/instances.json } }
budgets:
  - { scope: user, amount: 10, currency: GBP }
  - { scope: user, amount: 10, mode: soft, stopRunning: { grace: 1m } }
`,
        env: {},
        cwd: '/tmp',
      }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /\/cost\/priceTable\/path: cannot use price table \/nonexistent\/instances.json: ENOENT/.test(err.message) &&
      /\/budgets\/0\/currency: must be cost.currency \(USD\)/.test(err.message) &&
      /\/budgets\/1\/stopRunning: only a hard budget stops running sessions/.test(err.message),
  )
})
