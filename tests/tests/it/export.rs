//! `flowtrace export`: Parquet files per table and UTC day, read back with the parquet crate and compared with the
//! database and the API; re-runs; `--older-than` against what retention really drops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::START;
use crate::harness::{Kind, TestApp, try_test_db};

const TABLES: [(&str, &str, &str); 3] = [
    ("flow_trace_sessions", "start_time", "start_time, id"),
    ("flow_traces", "timestamp", "timestamp, seq"),
    ("flow_trace_events", "timestamp", "timestamp, seq"),
];

/// Runs `flowtrace export` against the test database; returns stdout, asserting success.
fn run_export(app: &TestApp, args: &[&str], env: &[(&str, String)]) -> String {
    let out = std::process::Command::new(crate::process::flowtrace_bin())
        .arg("export")
        .args(args)
        .env("DATABASE_URL", app.db.store.url())
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running flowtrace export");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "export failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or("")
}

pub struct ParquetFile {
    pub columns: Vec<String>,
    pub logical: Vec<Option<LogicalType>>,
    pub rows: Vec<Vec<Field>>,
    pub footer: BTreeMap<String, String>,
}

pub fn read_parquet(path: &Path) -> ParquetFile {
    let reader = SerializedFileReader::new(std::fs::File::open(path).expect("open")).expect("a Parquet file");
    let meta = reader.metadata().file_metadata();
    let schema = meta.schema_descr();
    let columns = schema.columns().iter().map(|c| c.name().to_owned()).collect();
    let logical = schema.columns().iter().map(|c| c.logical_type_ref().cloned()).collect();
    let footer = meta
        .key_value_metadata()
        .map(|kv| kv.iter().map(|k| (k.key.clone(), k.value.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let rows = reader
        .get_row_iter(None)
        .expect("rows")
        .map(|r| r.expect("row").into_columns().into_iter().map(|(_, f)| f).collect())
        .collect();
    ParquetFile { columns, logical, rows, footer }
}

/// `table`'s files, by day.
fn files(out: &Path, table: &str) -> BTreeMap<String, PathBuf> {
    let Ok(dir) = std::fs::read_dir(out.join(table)) else { return BTreeMap::new() };
    dir.map(|e| e.expect("entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            Some((name.strip_suffix(".parquet")?.to_owned(), p))
        })
        .collect()
}

fn micros(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}")).timestamp_micros()
}

/// The value a Parquet field should equal in the database's `to_jsonb` of the row.
fn as_json(field: &Field, logical: &Option<LogicalType>) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Str(s) if *logical == Some(LogicalType::Json) => serde_json::from_str(s).expect("JSON column"),
        Field::Str(s) => json!(s),
        Field::Long(x) => json!(x),
        Field::Int(x) => json!(x),
        Field::Double(x) => json!(x),
        Field::Bool(x) => json!(x),
        Field::TimestampMicros(x) => json!(x),
        other => panic!("unexpected Parquet value {other:?}"),
    }
}

/// Asserts that `file` holds exactly the rows of `table` in `[from, to)`, in order, every column equal to the
/// database's.
async fn assert_file_matches_db(
    app: &TestApp,
    table: &str,
    file: &ParquetFile,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let (_, time, order) = TABLES.iter().find(|t| t.0 == table).expect("table");
    let db: Vec<Value> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT to_jsonb(t) FROM {table} t WHERE {time} >= $1 AND {time} < $2 ORDER BY {order}"
    )))
    .bind(from)
    .bind(to)
    .fetch_all(app.db.store.pool())
    .await
    .expect("rows");
    assert_eq!(file.rows.len(), db.len(), "{table} rows in [{from}, {to})");
    let object = db.first().and_then(Value::as_object);
    if let Some(object) = object {
        let mut names: Vec<&String> = object.keys().collect();
        let mut ours: Vec<&String> = file.columns.iter().collect();
        names.sort();
        ours.sort();
        assert_eq!(ours, names, "{table}: the table's own column names");
    }
    for (row, expected) in file.rows.iter().zip(&db) {
        for ((name, field), logical) in file.columns.iter().zip(row).zip(&file.logical) {
            let want = &expected[name];
            let got = as_json(field, logical);
            match (logical, want) {
                (Some(LogicalType::Timestamp(_)), Value::String(t)) => {
                    assert_eq!(got, json!(micros(t)), "{table}.{name}")
                }
                // to_jsonb writes a double without a fraction as an integer.
                (_, Value::Number(n)) if matches!(field, Field::Double(_)) => {
                    assert_eq!(got.as_f64(), n.as_f64(), "{table}.{name}")
                }
                _ => assert_eq!(&got, want, "{table}.{name}"),
            }
        }
    }
}

fn column<'a>(file: &'a ParquetFile, row: &'a [Field], name: &str) -> &'a Field {
    &row[file.columns.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}"))]
}

fn text(field: &Field) -> Value {
    match field {
        Field::Str(s) => json!(s),
        Field::Null => Value::Null,
        other => panic!("not text: {other:?}"),
    }
}

fn json_text(field: &Field) -> Value {
    match field {
        Field::Str(s) => serde_json::from_str(s).expect("JSON"),
        Field::Null => Value::Null,
        other => panic!("not JSON: {other:?}"),
    }
}

fn time(field: &Field) -> i64 {
    match field {
        Field::TimestampMicros(t) => *t,
        other => panic!("not a timestamp: {other:?}"),
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

async fn start_session(app: &TestApp, workflow: &str, start: DateTime<Utc>, metadata: Value) -> String {
    // The replaced service's own id style: ids are opaque text.
    let id = format!("fts_{workflow}_{}", Uuid::new_v4().simple());
    app.ok(
        START,
        json!({ "input": { "id": id, "workflowId": workflow, "workflowName": format!("{workflow} name"),
                           "startTime": start.to_rfc3339(), "metadata": metadata } }),
    )
    .await;
    id
}

async fn complete(app: &TestApp, session: &str, end: DateTime<Utc>) {
    app.ok(
        &format!(
            "mutation {{ completeSession(id: \"{session}\", status: COMPLETED, endTime: \"{}\") {{ id }} }}",
            end.to_rfc3339()
        ),
        json!({}),
    )
    .await;
}

async fn record_traces(app: &TestApp, session: &str, times: &[DateTime<Utc>]) -> Vec<String> {
    let traces: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut trace = json!({
                "id": if i % 2 == 0 { format!("ft_{}", Uuid::new_v4().simple()) } else { Uuid::new_v4().to_string() },
                "timestamp": t.to_rfc3339(),
                "status": if i % 3 == 2 { "ERROR" } else { "SUCCESS" },
                "source": { "nodeId": "a", "nodeName": "A", "portId": "out" },
                "target": { "nodeId": "b", "portId": "in" },
                "data": { "payload": { "n": i, "text": "ünïcode \"quoted\"" }, "type": "json" },
            });
            if i % 3 == 2 {
                trace["error"] = json!({ "message": "boom", "code": "E1" });
            } else {
                trace["duration"] = json!(1.5 * i as f64);
            }
            trace
        })
        .collect();
    let ids = traces.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
    app.ok(
        &format!(
            "mutation($t: [TraceInput!]!) {{ recordTraces(sessionId: \"{session}\", traces: $t) {{ accepted }} }}"
        ),
        json!({ "t": traces }),
    )
    .await;
    ids
}

async fn record_events(app: &TestApp, session: &str, times: &[DateTime<Utc>]) {
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({ "nodeId": "a", "eventType": if i % 2 == 0 { "START" } else { "COMPLETE" },
                    "timestamp": t.to_rfc3339(), "data": if i % 2 == 0 { json!({ "k": [1, 2] }) } else { Value::Null },
                    "duration": 2.0 })
        })
        .collect();
    app.ok(
        &format!(
            "mutation($e: [EventInput!]!) {{ recordEvents(sessionId: \"{session}\", events: $e) {{ accepted }} }}"
        ),
        json!({ "e": events }),
    )
    .await;
}

/// Three days of sessions, traces and events (and one trace just past the last midnight); the first two sessions
/// end, the last keeps running. Returns the session ids and the first day.
async fn three_days(app: &TestApp) -> (Vec<String>, NaiveDate) {
    let first = (Utc::now() - Duration::days(5)).date_naive();
    let mut sessions = Vec::new();
    for k in 0..3 {
        let day = midnight(first) + Duration::days(k);
        let at = |h: i64, m: i64| day + Duration::hours(h) + Duration::minutes(m);
        let s = start_session(app, &format!("export-{k}"), at(10, 0), json!({ "k": k, "tag": "x" })).await;
        let mut times = vec![at(10, 1), at(10, 2), at(23, 59)];
        if k == 2 {
            times.push(at(24, 30));
        }
        record_traces(app, &s, &times).await;
        record_events(app, &s, &[at(10, 1), at(11, 0)]).await;
        if k < 2 {
            complete(app, &s, at(12, 0)).await;
        }
        sessions.push(s);
    }
    (sessions, first)
}

#[tokio::test]
async fn export_writes_one_file_per_table_and_day_that_reads_back_as_the_api_answers() {
    let app = TestApp::start(Kind::Default).await;
    let (sessions, first) = three_days(&app).await;
    let out = tempdir("days");
    let to = midnight(first) + Duration::days(4);
    let stdout = run_export(
        &app,
        &["--out", out.to_str().expect("path"), "--from", &first.to_string(), "--to", &to.to_rfc3339()],
        &[],
    );
    assert!(
        last_line(&stdout).starts_with(
            "exported: flow_trace_sessions 3 rows in 3 files, flow_traces 10 rows in 4 files, \
             flow_trace_events 6 rows in 3 files in "
        ),
        "{stdout}"
    );
    let day = |k: i64| (first + Duration::days(k)).to_string();
    for (table, days) in [("flow_trace_sessions", 3), ("flow_traces", 4), ("flow_trace_events", 3)] {
        let found = files(&out, table);
        assert_eq!(found.keys().cloned().collect::<Vec<_>>(), (0..days).map(day).collect::<Vec<_>>(), "{table}");
        for (name, path) in &found {
            let file = read_parquet(path);
            let start = midnight(name.parse().expect("a date"));
            assert_file_matches_db(&app, table, &file, start, start + Duration::days(1)).await;
            for (name, logical) in file.columns.iter().zip(&file.logical) {
                let expected = match name.as_str() {
                    "start_time" | "end_time" | "created_at" | "updated_at" | "timestamp" => {
                        Some(LogicalType::timestamp(true, TimeUnit::MICROS))
                    }
                    "metadata" | "data_payload" | "data" => Some(LogicalType::Json),
                    "id" | "session_id" | "parent_trace_id" | "workflow_id" | "status" => Some(LogicalType::String),
                    _ => continue,
                };
                assert_eq!(logical, &expected, "{table}.{name}");
            }
        }
    }

    // Every row against what the API returns for it.
    let sessions_files: Vec<ParquetFile> =
        files(&out, "flow_trace_sessions").values().map(|p| read_parquet(p)).collect();
    let traces_files: Vec<ParquetFile> = files(&out, "flow_traces").values().map(|p| read_parquet(p)).collect();
    let events_files: Vec<ParquetFile> = files(&out, "flow_trace_events").values().map(|p| read_parquet(p)).collect();
    let find = |files: &'_ [ParquetFile], id: &str| -> (usize, usize) {
        for (f, file) in files.iter().enumerate() {
            for (r, row) in file.rows.iter().enumerate() {
                if text(column(file, row, "id")) == json!(id) {
                    return (f, r);
                }
            }
        }
        panic!("{id} is not in the export");
    };
    for s in &sessions {
        let data = app
            .ok(
                &format!(
                    "{{ session(id: \"{s}\") {{ id workflowId workflowName startTime endTime status metadata
                         summary {{ totalTraces errorCount }}
                         traces(first: 100) {{ nodes {{ id sessionId timestamp status duration seq
                             source {{ nodeId nodeName portId }} target {{ nodeId }} data {{ payload size type }}
                             error {{ message code }} }} }}
                         events(first: 100) {{ nodes {{ id sessionId nodeId timestamp eventType data duration seq }} }} }} }}"
                ),
                json!({}),
            )
            .await;
        let api = &data["session"];
        let (f, r) = find(&sessions_files, s);
        let (file, row) = (&sessions_files[f], &sessions_files[f].rows[r]);
        assert_eq!(text(column(file, row, "workflow_id")), api["workflowId"]);
        assert_eq!(text(column(file, row, "workflow_name")), api["workflowName"]);
        assert_eq!(text(column(file, row, "status")), api["status"]);
        assert_eq!(json_text(column(file, row, "metadata")), api["metadata"]);
        assert_eq!(time(column(file, row, "start_time")), micros(api["startTime"].as_str().expect("start")));
        match api["endTime"].as_str() {
            Some(end) => assert_eq!(time(column(file, row, "end_time")), micros(end)),
            None => assert_eq!(column(file, row, "end_time"), &Field::Null),
        }
        assert_eq!(column(file, row, "total_traces"), &Field::Long(api["summary"]["totalTraces"].as_i64().expect("n")));
        assert_eq!(column(file, row, "error_count"), &Field::Long(api["summary"]["errorCount"].as_i64().expect("n")));
        let traces = api["traces"]["nodes"].as_array().expect("traces");
        assert!(!traces.is_empty());
        for t in traces {
            let (f, r) = find(&traces_files, t["id"].as_str().expect("id"));
            let (file, row) = (&traces_files[f], &traces_files[f].rows[r]);
            assert_eq!(text(column(file, row, "session_id")), t["sessionId"]);
            assert_eq!(time(column(file, row, "timestamp")), micros(t["timestamp"].as_str().expect("ts")));
            assert_eq!(text(column(file, row, "status")), t["status"]);
            assert_eq!(column(file, row, "seq"), &Field::Long(t["seq"].as_str().expect("seq").parse().expect("i64")));
            match t["duration"].as_f64() {
                Some(d) => assert_eq!(column(file, row, "duration"), &Field::Double(d)),
                None => assert_eq!(column(file, row, "duration"), &Field::Null),
            }
            assert_eq!(text(column(file, row, "source_node_id")), t["source"]["nodeId"]);
            assert_eq!(text(column(file, row, "source_node_name")), t["source"]["nodeName"]);
            assert_eq!(text(column(file, row, "source_port_id")), t["source"]["portId"]);
            assert_eq!(text(column(file, row, "target_node_id")), t["target"]["nodeId"]);
            assert_eq!(json_text(column(file, row, "data_payload")), t["data"]["payload"]);
            assert_eq!(column(file, row, "data_size"), &Field::Long(t["data"]["size"].as_i64().expect("size")));
            assert_eq!(text(column(file, row, "data_type")), t["data"]["type"]);
            assert_eq!(text(column(file, row, "error_message")), t["error"]["message"]);
            assert_eq!(text(column(file, row, "error_code")), t["error"]["code"]);
        }
        let events = api["events"]["nodes"].as_array().expect("events");
        assert_eq!(events.len(), 2);
        for e in events {
            let (f, r) = find(&events_files, e["id"].as_str().expect("id"));
            let (file, row) = (&events_files[f], &events_files[f].rows[r]);
            assert_eq!(text(column(file, row, "session_id")), e["sessionId"]);
            assert_eq!(text(column(file, row, "node_id")), e["nodeId"]);
            assert_eq!(text(column(file, row, "event_type")), e["eventType"]);
            assert_eq!(time(column(file, row, "timestamp")), micros(e["timestamp"].as_str().expect("ts")));
            assert_eq!(json_text(column(file, row, "data")), e["data"]);
            assert_eq!(column(file, row, "duration"), &Field::Double(e["duration"].as_f64().expect("duration")));
        }
    }

    // The day with the running session is not complete; every other day is.
    for (table, days) in [("flow_trace_sessions", 3), ("flow_traces", 4), ("flow_trace_events", 3)] {
        let found = files(&out, table);
        for k in 0..days {
            let footer = read_parquet(&found[&day(k)]).footer;
            let open = table == "flow_trace_sessions" && k == 2;
            assert_eq!(footer["flowtrace.complete"], (!open).to_string(), "{table} day {k}");
        }
    }

    // A re-run skips complete days (their files untouched) and writes the open one again.
    let before: BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> = TABLES
        .iter()
        .flat_map(|(t, _, _)| files(&out, t).into_values())
        .map(|p| {
            (
                p.clone(),
                (std::fs::read(&p).expect("bytes"), std::fs::metadata(&p).expect("meta").modified().expect("mtime")),
            )
        })
        .collect();
    complete(&app, &sessions[2], midnight(first) + Duration::days(2) + Duration::hours(13)).await;
    // What a run killed while writing leaves: a temporary file of a process that no longer exists (above pid_max).
    let stale = out.join("flow_traces").join(format!(".{}.parquet.4194305.tmp", day(1)));
    std::fs::write(&stale, b"PAR1 half a file").expect("stale file");
    let again = run_export(
        &app,
        &["--out", out.to_str().expect("path"), "--from", &first.to_string(), "--to", &to.to_rfc3339()],
        &[],
    );
    assert!(
        last_line(&again).starts_with(
            "exported: flow_trace_sessions 1 rows in 1 files, 2 complete days skipped, flow_traces 0 rows in 0 files, \
             4 complete days skipped, flow_trace_events 0 rows in 0 files, 3 complete days skipped"
        ),
        "{again}"
    );
    for (path, (bytes, modified)) in &before {
        let now = std::fs::read(path).expect("bytes");
        if path.ends_with(format!("flow_trace_sessions/{}.parquet", day(2))) {
            let file = read_parquet(path);
            assert_eq!(
                text(column(&file, &file.rows[0], "status")),
                json!("COMPLETED"),
                "the ended session, read again"
            );
            assert_eq!(file.footer["flowtrace.complete"], "true");
        } else {
            assert_eq!(&now, bytes, "{} unchanged", path.display());
            assert_eq!(&std::fs::metadata(path).expect("meta").modified().expect("mtime"), modified);
        }
    }
    assert!(
        std::fs::read_dir(out.join("flow_traces"))
            .expect("dir")
            .all(|e| { !e.expect("entry").file_name().to_string_lossy().ends_with(".tmp") }),
        "no temporary file is left"
    );
    assert!(!stale.exists(), "a dead run's temporary file is removed");
    let _ = std::fs::remove_dir_all(&out);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowtrace-export-{}-{name}-{}", std::process::id(), Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn an_empty_window_writes_nothing_and_says_so() {
    let app = TestApp::start(Kind::Default).await;
    three_days(&app).await;
    let out = tempdir("empty");
    let stdout =
        run_export(&app, &["--out", out.to_str().expect("path"), "--from", "2001-01-01", "--to", "2001-02-01"], &[]);
    assert!(
        last_line(&stdout)
            .starts_with("exported nothing (no rows in the window): flow_trace_sessions 0 rows in 0 files"),
        "{stdout}"
    );
    for (table, _, _) in TABLES {
        assert!(files(&out, table).is_empty(), "{table}");
    }
    // Bad options are refused before anything is written, with a message that says which.
    for (args, says) in [
        (vec!["--older-than", "soon"], "--older-than 'soon' is not a positive PostgreSQL interval"),
        (vec!["--older-than=-3 days"], "--older-than '-3 days' is not a positive PostgreSQL interval"),
        (vec!["--from", "2001-02-01", "--to", "2001-01-01"], "--from must be before --to"),
        (vec!["--from", "yesterday"], "\"yesterday\" is neither an RFC 3339 time nor a YYYY-MM-DD date"),
    ] {
        let out = std::process::Command::new(crate::process::flowtrace_bin())
            .args(["export", "--out", out.to_str().expect("path")])
            .args(&args)
            .env("DATABASE_URL", app.db.store.url())
            .output()
            .expect("running flowtrace export");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(files(&out, "flow_traces").is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

/// Ids of `table` with their time.
async fn ids(app: &TestApp, table: &str) -> BTreeSet<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id::text FROM {table}")))
        .fetch_all(app.db.store.pool())
        .await
        .expect("ids")
        .into_iter()
        .collect()
}

fn exported_ids(out: &Path, table: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for path in files(out, table).values() {
        let file = read_parquet(path);
        for row in &file.rows {
            assert!(ids.insert(text(column(&file, row, "id")).as_str().expect("id").to_owned()), "one row once");
        }
    }
    ids
}

/// Runs what the server's retention runs: its own deletes in plain mode, TimescaleDB's retention jobs otherwise.
async fn run_retention(app: &TestApp) {
    if app.db.timescaledb {
        let jobs: Vec<i32> =
            sqlx::query_scalar("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'")
                .fetch_all(app.db.store.pool())
                .await
                .expect("jobs");
        assert_eq!(jobs.len(), 3);
        for job in jobs {
            sqlx::query("CALL run_job($1)").bind(job).execute(app.db.store.pool()).await.expect("run_job");
        }
    } else {
        app.db.store.delete_expired(&migration::Policies::default(), true).await.expect("retention");
    }
}

/// A fresh database's TimescaleDB jobs are due at once (the template's schedule is in the past) and would drop the
/// old data this test writes while it writes it: they are unscheduled, and the test runs retention itself.
async fn unschedule_jobs(app: &TestApp) {
    if app.db.timescaledb {
        sqlx::query(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
             WHERE proc_name IN ('policy_retention', 'policy_compression')",
        )
        .execute(app.db.store.pool())
        .await
        .expect("unscheduling jobs");
    }
}

#[tokio::test]
async fn older_than_exports_exactly_what_retention_then_drops() {
    let app = TestApp::start(Kind::Default).await;
    unschedule_jobs(&app).await;
    let now = Utc::now();
    // Around each table's default retention (sessions 90, traces 30, events 7 days), a day or more from the cut.
    for (k, days) in [100, 92, 88, 33, 32, 28, 9, 8, 5, 1].into_iter().enumerate() {
        let at = now - Duration::days(days);
        let s = start_session(&app, &format!("old-{k}"), at, json!(null)).await;
        record_traces(&app, &s, &[at + Duration::minutes(1), at + Duration::minutes(2)]).await;
        record_events(&app, &s, &[at + Duration::minutes(1)]).await;
    }
    let out = tempdir("older");
    let first_out = out.clone();
    let before: Vec<BTreeSet<String>> = futures::future::join_all(TABLES.iter().map(|t| ids(&app, t.0))).await;
    let stdout = run_export(&app, &["--out", out.to_str().expect("path"), "--older-than"], &[]);
    run_retention(&app).await;
    for ((table, _, _), before) in TABLES.iter().zip(before) {
        let after = ids(&app, table).await;
        let dropped: BTreeSet<String> = before.difference(&after).cloned().collect();
        assert!(!dropped.is_empty() && !after.is_empty(), "{table}: the data straddles the cut ({stdout})");
        assert_eq!(exported_ids(&out, table), dropped, "{table}: exported exactly what retention dropped\n{stdout}");
    }
    // An explicit duration applies to every table.
    let out = tempdir("older-explicit");
    let stdout = run_export(&app, &["--out", out.to_str().expect("path"), "--older-than", "2 days"], &[]);
    assert_eq!(exported_ids(&out, "flow_trace_events").len(), 1, "the event of 5 days ago, not yesterday's: {stdout}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&first_out);
}

#[tokio::test]
async fn a_day_cut_by_the_window_is_completed_later_keeping_rows_retention_deleted() {
    // Plain mode: retention deletes rows one by one, so a cut can fall inside a day.
    let Some(db) = try_test_db(Kind::Plain).await else { return };
    let app = TestApp::with_db(db, Default::default()).await;
    let day = (Utc::now() - Duration::days(40)).date_naive();
    let at = |h: i64| midnight(day) + Duration::hours(h);
    let s = start_session(&app, "cut", at(1), json!(null)).await;
    let early = record_traces(&app, &s, &[at(2), at(3)]).await;
    let late = record_traces(&app, &s, &[at(20), at(21)]).await;
    // Traces retention that cuts this day at noon.
    let retention = format!("{} seconds", (Utc::now() - at(12)).num_seconds());
    let env = [("FLOWTRACE_TRACES_RETENTION", retention.clone())];
    let out = tempdir("cut");
    let path = out.join("flow_traces").join(format!("{day}.parquet"));
    run_export(&app, &["--out", out.to_str().expect("path"), "--older-than"], &env);
    let file = read_parquet(&path);
    assert_eq!(file.footer["flowtrace.complete"], "false");
    assert_eq!(exported_ids(&out, "flow_traces"), early.iter().cloned().collect());
    // Retention deletes the morning; a trace of the morning arrives late (kept in the file only if read again,
    // which it is not: rows before the cut come from the earlier file).
    let mut policies = migration::Policies::default();
    if let Some(t) = policies.table_mut("flow_traces") {
        t.retain_for = retention.clone();
    }
    app.db.store.delete_expired(&policies, true).await.expect("retention");
    assert_eq!(ids(&app, "flow_traces").await, late.iter().cloned().collect());
    // The whole day now, with the retention in force unchanged: morning from the file, evening from the database.
    let stdout = run_export(&app, &["--out", out.to_str().expect("path"), "--from", &day.to_string()], &env);
    assert!(stdout.contains("flow_traces 4 rows in 1 files"), "{stdout}");
    let file = read_parquet(&path);
    assert_eq!(file.footer["flowtrace.complete"], "true", "{:?}", file.footer);
    assert_eq!(exported_ids(&out, "flow_traces"), early.iter().chain(&late).cloned().collect());
    let times: Vec<i64> = file.rows.iter().map(|r| time(column(&file, r, "timestamp"))).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    // Complete now: the next run skips it.
    let again = run_export(&app, &["--out", out.to_str().expect("path"), "--from", &day.to_string()], &env);
    assert!(again.contains("flow_traces 0 rows in 0 files, 1 complete days skipped"), "{again}");
    let _ = std::fs::remove_dir_all(&out);
}
