// Apollo Client 4 against a running flowtrace at FLOWTRACE_URL: a query, automatic persisted queries, and a
// subscription over HTTP multipart (Apollo's protocol) that gets stored traces, then live ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { url, trace } from '../common.js';

const client = () => new ApolloClient({ link: new HttpLink({ uri: url }), cache: new InMemoryCache() });

const START = gql`
  mutation Start($input: StartSessionInput!) {
    startSession(input: $input) { id }
  }
`;
const RECORD = gql`
  mutation Record($s: ID!, $t: [TraceInput!]!) {
    recordTraces(sessionId: $s, traces: $t) { accepted }
  }
`;
const TRACES = gql`
  subscription Traces($s: ID, $after: String) {
    traces(sessionId: $s, after: $after) { cursor node { id } }
  }
`;

test('Apollo Client: a query', async () => {
  const apollo = client();
  const { data, error } = await apollo.query({ query: gql`query Typename { __typename }` });
  assert.equal(error, undefined);
  assert.equal(data.__typename, 'Query');
  apollo.stop();
});

test('Apollo Client: automatic persisted queries register on a miss, then go by hash alone', async () => {
  const sent = [];
  const recording = (input, init) => {
    sent.push(JSON.parse(init.body));
    return fetch(input, init);
  };
  const sha256 = (text) => createHash('sha256').update(text).digest('hex');
  const link = new PersistedQueryLink({ sha256 }).concat(new HttpLink({ uri: url, fetch: recording }));
  const apollo = new ApolloClient({ link, cache: new InMemoryCache() });
  // A document no other test sends, so the server cannot know its hash yet.
  const marker = `Persisted${randomUUID().replaceAll('-', '')}`;
  const query = gql(`query ${marker} { __typename }`);
  for (let round = 0; round < 2; round++) {
    const { data, error } = await apollo.query({ query, fetchPolicy: 'network-only' });
    assert.equal(error, undefined, String(error));
    assert.equal(data.__typename, 'Query');
  }
  assert.deepEqual(
    sent.map((body) => [typeof body.query, typeof body.extensions?.persistedQuery?.sha256Hash]),
    [['undefined', 'string'], ['string', 'string'], ['undefined', 'string']],
    'the hash alone, then with the document after the miss, then the hash alone again',
  );
  apollo.stop();
});

/** Follows a session's traces over multipart; `until(n)` waits for the first `n` edges. */
function follow(apollo, variables) {
  const received = [];
  let wake = () => {};
  const subscription = apollo.subscribe({ query: TRACES, variables }).subscribe({
    next: (result) => {
      assert.equal(result.error, undefined, String(result.error));
      received.push(result.data.traces);
      wake();
    },
    error: (err) => assert.fail(err),
  });
  const until = async (n) => {
    const deadline = Date.now() + 15_000;
    while (received.length < n) {
      assert.ok(Date.now() < deadline, `only ${received.length} of ${n} traces within 15 s`);
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 200);
      });
    }
    return received;
  };
  return { until, stop: () => subscription.unsubscribe() };
}

test('Apollo Client: a multipart subscription gets stored then live traces, and resumes from a cursor', async () => {
  const apollo = client();
  const session = randomUUID();
  await apollo.mutate({ mutation: START, variables: { input: { id: session, workflowId: 'wf-apollo', workflowName: 'Apollo' } } });
  const stored = [trace(0), trace(1)];
  await apollo.mutate({ mutation: RECORD, variables: { s: session, t: stored } });
  const first = follow(apollo, { s: session });
  try {
    assert.deepEqual((await first.until(2)).map((e) => e.node.id), stored.map((t) => t.id));
    const later = [trace(2)];
    await apollo.mutate({ mutation: RECORD, variables: { s: session, t: later } });
    const all = await first.until(3);
    assert.deepEqual(all.slice(2).map((e) => e.node.id), later.map((t) => t.id));
    first.stop();

    const missed = [trace(3)];
    await apollo.mutate({ mutation: RECORD, variables: { s: session, t: missed } });
    const resumed = follow(apollo, { s: session, after: all[2].cursor });
    try {
      assert.deepEqual((await resumed.until(1)).map((e) => e.node.id), missed.map((t) => t.id));
    } finally {
      resumed.stop();
    }
  } finally {
    first.stop();
    apollo.stop();
  }
});
