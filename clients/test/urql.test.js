// urql with its subscription exchange over graphql-ws (graphql-transport-ws) against a running flowtrace at
// FLOWTRACE_URL: stored then live traces, and a resumption from a cursor; queries and mutations over fetch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Client, fetchExchange, subscriptionExchange, gql } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import WebSocket from 'ws';
import { pipe, subscribe } from 'wonka';
import { url, trace } from '../common.js';

const TRACES = gql`
  subscription Traces($s: ID, $after: String) {
    traces(sessionId: $s, after: $after) { cursor node { id } }
  }
`;

/** Collects a subscription's traces; `until(n)` waits for the first `n`. */
function follow(client, variables) {
  const received = [];
  const { unsubscribe } = pipe(
    client.subscription(TRACES, variables),
    subscribe((result) => {
      assert.equal(result.error, undefined, String(result.error));
      received.push(result.data.traces);
    }),
  );
  const until = async (n) => {
    const deadline = Date.now() + 15_000;
    while (received.length < n) {
      assert.ok(Date.now() < deadline, `only ${received.length} of ${n} traces within 15 s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return received;
  };
  return { until, unsubscribe };
}

test('urql over graphql-ws: stored then live traces, and a resumption from a cursor', async () => {
  const ws = createWsClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
  const client = new Client({
    url,
    exchanges: [
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: ws.subscribe(input, sink) }) };
        },
      }),
    ],
  });
  try {
    const session = randomUUID();
    const started = await client
      .mutation(gql`mutation($input: StartSessionInput!) { startSession(input: $input) { id } }`, {
        input: { id: session, workflowId: 'wf-urql', workflowName: 'urql' },
      })
      .toPromise();
    assert.equal(started.error, undefined, String(started.error));
    const record = async (traces) => {
      const mutation = gql`mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }`;
      const result = await client.mutation(mutation, { s: session, t: traces }).toPromise();
      assert.equal(result.error, undefined, String(result.error));
    };
    const stored = [trace(0), trace(1)];
    await record(stored);

    const live = follow(client, { s: session });
    const first = await live.until(2);
    assert.deepEqual(first.map((t) => t.node.id), stored.map((t) => t.id));
    const later = [trace(2)];
    await record(later);
    assert.deepEqual((await live.until(3)).slice(2).map((t) => t.node.id), later.map((t) => t.id));
    live.unsubscribe();

    const resumed = follow(client, { s: session, after: first[0].cursor });
    const again = await resumed.until(2);
    assert.deepEqual(again.map((t) => t.node.id), [stored[1].id, later[0].id]);
    resumed.unsubscribe();
  } finally {
    await ws.dispose();
  }
});
