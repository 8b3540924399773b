// Subscriptions over Server-Sent Events with the graphql-sse client (distinct connections mode) against a running
// flowtrace at FLOWTRACE_URL: stored traces first, then live ones, then a resumption from a cursor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createClient } from 'graphql-sse';
import { url, trace, gql } from '../common.js';

const TRACES = `subscription($s: ID, $after: String) {
  traces(sessionId: $s, after: $after) { cursor node { id } }
}`;

async function record(session, traces) {
  const mutation = `mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }`;
  await gql(mutation, { s: session, t: traces });
}

/** The next `n` results of an iterator, failing after a timeout. */
async function take(iterator, n) {
  const results = [];
  while (results.length < n) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('no result within 15 s')), 15_000);
    });
    const { value, done } = await Promise.race([iterator.next(), timeout]).finally(() => clearTimeout(timer));
    assert.equal(done, false, 'the stream ended early');
    assert.equal(value.errors, undefined, JSON.stringify(value.errors));
    results.push(value.data.traces);
  }
  return results;
}

test('graphql-sse: stored then live traces, and a resumption from a cursor', async () => {
  const session = randomUUID();
  await gql(`mutation($input: StartSessionInput!) { startSession(input: $input) { id } }`, {
    input: { id: session, workflowId: 'wf-sse-js', workflowName: 'SSE from JavaScript' },
  });
  const stored = [trace(0), trace(1), trace(2)];
  await record(session, stored);

  const client = createClient({ url, retryAttempts: 0 });
  try {
    const live = client.iterate({ query: TRACES, variables: { s: session } });
    const first = await take(live, 3);
    assert.deepEqual(first.map((t) => t.node.id), stored.map((t) => t.id));
    const later = [trace(3), trace(4)];
    await record(session, later);
    assert.deepEqual((await take(live, 2)).map((t) => t.node.id), later.map((t) => t.id));
    await live.return();

    const resumed = client.iterate({ query: TRACES, variables: { s: session, after: first[2].cursor } });
    assert.deepEqual((await take(resumed, 2)).map((t) => t.node.id), later.map((t) => t.id));
    await resumed.return();
  } finally {
    client.dispose();
  }
});

test('graphql-sse single connection mode: two subscriptions share one stream', async () => {
  const session = randomUUID();
  await gql(`mutation($input: StartSessionInput!) { startSession(input: $input) { id } }`, {
    input: { id: session, workflowId: 'wf-sse-single', workflowName: 'SSE single connection' },
  });
  const stored = [trace(0), trace(1)];
  await record(session, stored);

  const client = createClient({ url, singleConnection: true, retryAttempts: 0 });
  try {
    const a = client.iterate({ query: TRACES, variables: { s: session } });
    const b = client.iterate({ query: TRACES, variables: { s: session } });
    assert.deepEqual((await take(a, 2)).map((t) => t.node.id), stored.map((t) => t.id));
    assert.deepEqual((await take(b, 2)).map((t) => t.node.id), stored.map((t) => t.id));
    const later = [trace(2)];
    await record(session, later);
    assert.deepEqual((await take(a, 1)).map((t) => t.node.id), later.map((t) => t.id));
    await a.return();
    assert.deepEqual((await take(b, 1)).map((t) => t.node.id), later.map((t) => t.id));
    await b.return();
  } finally {
    client.dispose();
  }
});
