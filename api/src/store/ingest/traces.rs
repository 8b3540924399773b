//! Where traces are written: a batch, validated whole, becomes one INSERT over UNNEST-ed column arrays that also
//! updates the session summary and the per-node minute counts, in one transaction with its wake-up.

use chrono::{DateTime, Utc};

use super::checks;
use super::{NODE_MINUTES, NewTrace, Recorded, stored_ids};
use crate::limits::Limits;
use crate::store::ids::generate_id;
use crate::store::notify::{Kind, Wakeup};
use crate::store::{Store, StoreResult};

impl Store {
    pub async fn record_traces(
        &self,
        limits: &Limits,
        session_id: &str,
        mut traces: Vec<NewTrace>,
    ) -> StoreResult<Recorded> {
        let payloads = checks::traces(limits, session_id, &traces)?;
        // Draw `seq` in time order so that, for clients that send in time order, seq order is time order too.
        let mut order: Vec<usize> = (0..traces.len()).collect();
        order.sort_by_key(|&i| traces[i].timestamp);
        let cols = TraceColumns::build(&mut traces, payloads, &order);
        let [s0, s1, s2, s3, s4, s5] = cols.source;
        let [t0, t1, t2, t3, t4, t5] = cols.target;

        let (mut tx, workflow_id) = self.begin_session_write(session_id).await?;
        let stored = stored_ids(&mut tx, "flow_traces", session_id, &cols.id).await?;
        let (accepted, max_seq): (i64, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            r#"
            WITH ins AS (
                INSERT INTO flow_traces (
                    seq, session_id, workflow_id, id, timestamp, duration, status,
                    source_node_id, source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
                    target_node_id, target_node_name, target_node_type, target_port_id, target_port_name, target_port_type,
                    data_payload, data_size, data_type, data_preview, error_message, error_code, error_stack,
                    graph_id, graph_name, parent_trace_id, depth)
                SELECT nextval('flow_trace_seq'), $1, $2, u.id, u.ts, u.duration, u.status,
                    u.sn, u.snn, u.snt, u.sp, u.spn, u.spt, u.tn, u.tnn, u.tnt, u.tp, u.tpn, u.tpt,
                    u.payload::jsonb, u.size, u.dtype, u.preview, u.emsg, u.ecode, u.estack,
                    u.graph_id, u.graph_name, u.parent, u.depth
                FROM UNNEST($3::text[], $4::timestamptz[], $5::float8[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                    $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                    $19::text[], $20::int8[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
                    $26::text[], $27::text[], $28::text[], $29::int4[])
                    AS u(id, ts, duration, status, sn, snn, snt, sp, spn, spt, tn, tnn, tnt, tp, tpn, tpt,
                         payload, size, dtype, preview, emsg, ecode, estack, graph_id, graph_name, parent, depth)
                -- An id is stored once per session, whatever its timestamp ($30: the ones it already holds).
                WHERE u.id <> ALL($30::text[])
                ON CONFLICT DO NOTHING
                RETURNING session_id, seq, status, data_size, duration, timestamp, source_node_id, target_node_id
            ),
            agg AS (
                SELECT count(*) AS n,
                    count(*) FILTER (WHERE status = 'SUCCESS') AS ok,
                    count(*) FILTER (WHERE status = 'ERROR') AS err,
                    count(*) FILTER (WHERE status = 'WARNING') AS warn,
                    COALESCE(sum(data_size), 0) AS bytes,
                    COALESCE(sum(duration), 0) AS dur,
                    count(duration) AS timed,
                    max(seq) AS max_seq
                FROM ins
            ),
            upd AS (
                UPDATE flow_trace_sessions s SET
                    total_traces = s.total_traces + agg.n,
                    success_count = s.success_count + agg.ok,
                    error_count = s.error_count + agg.err,
                    warning_count = s.warning_count + agg.warn,
                    total_data_size = s.total_data_size + agg.bytes,
                    total_duration = s.total_duration + agg.dur,
                    timed_traces = s.timed_traces + agg.timed,
                    updated_at = now()
                FROM agg
                WHERE s.id = $1 AND agg.n > 0
                RETURNING 1
            ),
            {NODE_MINUTES}
            SELECT n, max_seq FROM agg, (SELECT count(*) FROM upd) AS updated
            "#
        )))
        .bind(session_id)
        .bind(&workflow_id)
        .bind(cols.id)
        .bind(cols.ts)
        .bind(cols.duration)
        .bind(cols.status)
        .bind(s0)
        .bind(s1)
        .bind(s2)
        .bind(s3)
        .bind(s4)
        .bind(s5)
        .bind(t0)
        .bind(t1)
        .bind(t2)
        .bind(t3)
        .bind(t4)
        .bind(t5)
        .bind(cols.payload)
        .bind(cols.size)
        .bind(cols.data_type)
        .bind(cols.preview)
        .bind(cols.error_message)
        .bind(cols.error_code)
        .bind(cols.error_stack)
        .bind(cols.graph_id)
        .bind(cols.graph_name)
        .bind(cols.parent)
        .bind(cols.depth)
        .bind(stored)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(seq) = max_seq {
            Wakeup { kind: Kind::Trace, session_id: session_id.to_owned(), workflow_id, seq }.send(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Recorded { accepted, duplicates: traces.len() as i64 - accepted })
    }
}

/// A batch of traces as column arrays, in `seq` order.
struct TraceColumns {
    id: Vec<String>,
    ts: Vec<DateTime<Utc>>,
    duration: Vec<Option<f64>>,
    status: Vec<&'static str>,
    source: [Vec<Option<String>>; 6],
    target: [Vec<Option<String>>; 6],
    payload: Vec<Option<String>>,
    size: Vec<Option<i64>>,
    data_type: Vec<Option<String>>,
    preview: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    error_code: Vec<Option<String>>,
    error_stack: Vec<Option<String>>,
    graph_id: Vec<String>,
    graph_name: Vec<Option<String>>,
    parent: Vec<Option<String>>,
    depth: Vec<i32>,
}

impl TraceColumns {
    fn build(traces: &mut [NewTrace], mut payloads: Vec<Option<String>>, order: &[usize]) -> TraceColumns {
        let n = traces.len();
        let mut c = TraceColumns {
            id: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            source: Default::default(),
            target: Default::default(),
            payload: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
            data_type: Vec::with_capacity(n),
            preview: Vec::with_capacity(n),
            error_message: Vec::with_capacity(n),
            error_code: Vec::with_capacity(n),
            error_stack: Vec::with_capacity(n),
            graph_id: Vec::with_capacity(n),
            graph_name: Vec::with_capacity(n),
            parent: Vec::with_capacity(n),
            depth: Vec::with_capacity(n),
        };
        for &i in order {
            let t = &mut traces[i];
            let payload = payloads[i].take();
            c.id.push(t.id.take().unwrap_or_else(generate_id));
            c.ts.push(t.timestamp);
            c.duration.push(t.duration);
            c.status.push(t.status.as_str());
            for (cols, node) in [(&mut c.source, &mut t.source), (&mut c.target, &mut t.target)] {
                cols[0].push(Some(std::mem::take(&mut node.node_id)));
                cols[1].push(node.node_name.take());
                cols[2].push(node.node_type.take());
                cols[3].push(node.port_id.take());
                cols[4].push(node.port_name.take());
                cols[5].push(node.port_type.take());
            }
            // Without a client-given size, the payload's JSON length is the best measure of what was passed.
            c.size.push(t.size.or(payload.as_ref().map(|p| p.len() as i64)));
            c.payload.push(payload);
            c.data_type.push(t.data_type.take());
            c.preview.push(t.preview.take());
            c.error_message.push(t.error_message.take());
            c.error_code.push(t.error_code.take());
            c.error_stack.push(t.error_stack.take());
            c.graph_id.push(t.graph_id.take().unwrap_or_else(|| "main".to_owned()));
            c.graph_name.push(t.graph_name.take());
            c.parent.push(t.parent_trace_id.take());
            c.depth.push(t.depth.unwrap_or(0));
        }
        c
    }
}
