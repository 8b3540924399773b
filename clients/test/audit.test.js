// The GraphQL over HTTP spec's server audit (graphql-http's `serverAudits`) against a running flowtrace at
// FLOWTRACE_URL (its /graphql endpoint). Every audit must be ok: a warning fails too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAudits } from 'graphql-http';
import { url } from '../common.js';

for (const audit of serverAudits({ url })) {
  test(`${audit.id} ${audit.name}`, async () => {
    const result = await audit.fn();
    assert.equal(result.status, 'ok', result.status === 'ok' ? '' : result.reason);
  });
}
