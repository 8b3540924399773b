// The legacy `graphql-ws` subprotocol through its own client, subscriptions-transport-ws, against a running flowtrace
// at FLOWTRACE_URL: stored then live traces, and a resumption from a cursor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pkg from 'subscriptions-transport-ws';
import WebSocket from 'ws';

const { SubscriptionClient } = pkg;
const url = process.env.FLOWTRACE_URL;
if (!url) {
  throw new Error('set FLOWTRACE_URL to the GraphQL endpoint of a running flowtrace, e.g. http://127.0.0.1:8080/graphql');
}

async function gql(query, variables) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

function trace(i) {
  return {
    id: randomUUID(),
    timestamp: new Date(Date.now() - 60_000 + i * 1000).toISOString(),
    status: 'SUCCESS',
    source: { nodeId: 'a' },
    target: { nodeId: 'b' },
    data: { preview: `t${i}` },
  };
}

/** Follows a session's traces over the legacy protocol; `until(n)` waits for the first `n`. */
function follow(client, variables) {
  const received = [];
  const query = 'subscription($s: ID, $after: String) { traces(sessionId: $s, after: $after) { cursor node { id } } }';
  const subscription = client.request({ query, variables }).subscribe({
    next(result) {
      assert.equal(result.errors, undefined, JSON.stringify(result.errors));
      received.push(result.data.traces);
    },
    error(err) {
      throw err;
    },
  });
  const until = async (n) => {
    const deadline = Date.now() + 15_000;
    while (received.length < n) {
      assert.ok(Date.now() < deadline, `only ${received.length} of ${n} traces within 15 s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return received;
  };
  return { until, stop: () => subscription.unsubscribe() };
}

test('subscriptions-transport-ws (legacy graphql-ws): stored then live traces, and a resumption from a cursor', async () => {
  const client = new SubscriptionClient(url.replace(/^http/, 'ws'), { reconnect: false, lazy: false }, WebSocket);
  try {
    const session = randomUUID();
    await gql('mutation($i: StartSessionInput!) { startSession(input: $i) { id } }', {
      i: { id: session, workflowId: 'wf-legacy', workflowName: 'legacy' },
    });
    const record = (traces) =>
      gql('mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }', {
        s: session,
        t: traces,
      });
    const stored = [trace(0), trace(1)];
    await record(stored);
    const first = follow(client, { s: session });
    await first.until(2);
    const live = [trace(2), trace(3)];
    await record(live);
    const all = await first.until(4);
    assert.deepEqual(all.map((e) => e.node.id), [...stored, ...live].map((t) => t.id));
    first.stop();

    const later = [trace(4)];
    await record(later);
    const resumed = follow(client, { s: session, after: all[3].cursor });
    const rest = await resumed.until(1);
    assert.deepEqual(rest.map((e) => e.node.id), later.map((t) => t.id));
    resumed.stop();
  } finally {
    client.close();
  }
});
