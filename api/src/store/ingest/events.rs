//! Where events are written: a batch, validated whole, becomes one INSERT over UNNEST-ed column arrays in one
//! transaction with its wake-up.

use chrono::{DateTime, Utc};

use super::checks;
use super::{NewEvent, Recorded, stored_ids};
use crate::limits::Limits;
use crate::store::ids::generate_id;
use crate::store::notify::{Kind, Wakeup};
use crate::store::{Store, StoreResult};

impl Store {
    pub async fn record_events(
        &self,
        limits: &Limits,
        session_id: &str,
        events: Vec<NewEvent>,
    ) -> StoreResult<Recorded> {
        let (data, metadata) = checks::events(limits, session_id, &events)?;
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].timestamp);
        let pick = |i: usize| &events[i];
        let ids: Vec<String> = order.iter().map(|&i| pick(i).id.clone().unwrap_or_else(generate_id)).collect();
        let ts: Vec<DateTime<Utc>> = order.iter().map(|&i| pick(i).timestamp).collect();
        let node: Vec<String> = order.iter().map(|&i| pick(i).node_id.clone()).collect();
        let port: Vec<Option<String>> = order.iter().map(|&i| pick(i).port_id.clone()).collect();
        let kind: Vec<&str> = order.iter().map(|&i| pick(i).event_type.as_str()).collect();
        let data: Vec<Option<String>> = order.iter().map(|&i| data[i].clone()).collect();
        let duration: Vec<Option<f64>> = order.iter().map(|&i| pick(i).duration).collect();
        let metadata: Vec<Option<String>> = order.iter().map(|&i| metadata[i].clone()).collect();

        let (mut tx, workflow_id) = self.begin_session_write(session_id).await?;
        let stored = stored_ids(&mut tx, "flow_trace_events", session_id, &ids).await?;
        let (accepted, max_seq): (i64, Option<i64>) = sqlx::query_as(
            r#"
            WITH ins AS (
                INSERT INTO flow_trace_events
                    (seq, session_id, workflow_id, id, timestamp, node_id, port_id, event_type, data, duration, metadata)
                SELECT nextval('flow_trace_event_seq'), $1, $2, u.id, u.ts, u.node, u.port, u.kind,
                    u.data::jsonb, u.duration, u.metadata::jsonb
                FROM UNNEST($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[],
                    $9::float8[], $10::text[]) AS u(id, ts, node, port, kind, data, duration, metadata)
                WHERE u.id <> ALL($11::text[])
                ON CONFLICT DO NOTHING
                RETURNING seq
            )
            SELECT count(*), max(seq) FROM ins
            "#,
        )
        .bind(session_id)
        .bind(&workflow_id)
        .bind(ids)
        .bind(ts)
        .bind(node)
        .bind(port)
        .bind(kind)
        .bind(data)
        .bind(duration)
        .bind(metadata)
        .bind(stored)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(seq) = max_seq {
            Wakeup { kind: Kind::Event, session_id: session_id.to_owned(), workflow_id, seq }.send(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Recorded { accepted, duplicates: events.len() as i64 - accepted })
    }
}
