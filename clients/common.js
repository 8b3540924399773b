// What the client tests share: the server's URL, a trace to record, and a plain GraphQL POST for setting up data.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

export const url = process.env.FLOWTRACE_URL;
if (!url) {
  throw new Error('set FLOWTRACE_URL to the GraphQL endpoint of a running flowtrace, e.g. http://127.0.0.1:8080/graphql');
}

/** The `i`-th trace of a test: one second apart, the first a minute ago. */
export function trace(i) {
  return {
    id: randomUUID(),
    timestamp: new Date(Date.now() - 60_000 + i * 1000).toISOString(),
    duration: 10,
    status: 'SUCCESS',
    source: { nodeId: 'a', portId: 'out' },
    target: { nodeId: 'b', portId: 'in' },
    data: { payload: { n: i }, type: 'json' },
  };
}

/** POSTs an operation and returns its data; fails the test on any error. */
export async function gql(query, variables) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}
