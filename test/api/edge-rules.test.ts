import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import type { TSchema } from '@sinclair/typebox'
import { InstanceId, KeyId, KeyName, TemplateName, UserId } from '../../src/api/schemas.js'
import { isInstanceId, isKeyId, isKeyName, isTemplateName, isUserId } from '../../src/domain/ids.js'

// The API's schemas are built from the domain's rules: what one accepts, the other accepts.
describe('edge schemas and domain rules', () => {
  const samples: unknown[] = [
    'abcdefghijklmnopqrst',
    'abcdefghijklmnopqrs1',
    'abcdefghijklmnopqrstu',
    'abcdefghijkl',
    'rstudio',
    'r-studio-2',
    '2rstudio',
    'RStudio',
    'a'.repeat(63),
    'a'.repeat(64),
    'ci-key.1',
    'ci key',
    'alice@example.org',
    'bob\u0000',
    'tab\tin',
    '\u{1F600} emoji',
    '',
    ' ',
    'x'.repeat(200),
    'x'.repeat(201),
    42,
    null,
  ]
  const pairs: [string, TSchema, (v: unknown) => boolean][] = [
    ['instance id', InstanceId, isInstanceId],
    ['template name', TemplateName, isTemplateName],
    ['key id', KeyId, isKeyId],
    ['key name', KeyName, isKeyName],
    // The API takes a blank user id as the seed did; the dashboard's logins (isUserId) refuse one.
    ['user id', UserId, (v) => isUserId(v) || (typeof v === 'string' && v.length > 0 && v.trim() === '')],
  ]
  for (const [name, schema, rule] of pairs) {
    it(`the ${name} schema accepts exactly what the domain's rule accepts`, () => {
      const check = TypeCompiler.Compile(schema)
      for (const v of samples) assert.equal(check.Check(v), rule(v), `${name}: ${JSON.stringify(v)}`)
    })
  }
})
