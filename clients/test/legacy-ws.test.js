// The legacy `graphql-ws` subprotocol through its own client, subscriptions-transport-ws, against a running flowtrace
// at FLOWTRACE_URL: stored then live traces, and a resumption from a cursor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import pkg from 'subscriptions-transport-ws';
import WebSocket from 'ws';
import { url, trace, gql } from '../common.js';

const { SubscriptionClient } = pkg;

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
