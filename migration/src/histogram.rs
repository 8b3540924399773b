//! The fixed log-scale duration histogram the aggregates keep per bucket, so percentiles over any range come from
//! merging histograms rather than from scanning raw rows.
//!
//! Bucket `i` (1 to `BUCKETS`) holds durations in `[MIN_MS · R^(i-1), MIN_MS · R^i)` with `R = (MAX_MS / MIN_MS)^(1 /
//! BUCKETS)`; bucket 0 holds shorter durations (zero included) and bucket `BUCKETS + 1` longer ones. The array has
//! `BUCKETS + 2` counts, as TimescaleDB's `histogram` returns them; plain mode has an aggregate of its own that counts
//! the same way (`width_bucket`), so both modes answer alike. Null durations are not counted; a bucket without any
//! duration has a null histogram.

/// Milliseconds: the lower edge of the first bucket.
pub const MIN_MS: f64 = 0.01;
/// Milliseconds: the upper edge of the last bucket.
pub const MAX_MS: f64 = 1e9;
/// Buckets between `MIN_MS` and `MAX_MS`.
pub const BUCKETS: i32 = 440;

/// The ratio of a bucket's upper edge to its lower one.
pub fn ratio() -> f64 {
    (MAX_MS / MIN_MS).powf(1.0 / f64::from(BUCKETS))
}

/// The plain-mode aggregate: one more count in the bucket `width_bucket` gives, a null state until the first value.
pub(crate) const PLAIN_AGGREGATE: [&str; 2] = [
    "CREATE FUNCTION flowtrace_histogram_step(state integer[], value double precision, lo double precision,
        hi double precision, n integer) RETURNS integer[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
     DECLARE b integer := width_bucket(value, lo, hi, n) + 1;
     BEGIN
        IF state IS NULL THEN state := array_fill(0, ARRAY[n + 2]); END IF;
        state[b] := state[b] + 1;
        RETURN state;
     END $$",
    "CREATE AGGREGATE flowtrace_histogram(double precision, double precision, double precision, integer)
        (SFUNC = flowtrace_histogram_step, STYPE = integer[])",
];

pub(crate) const DROP_PLAIN_AGGREGATE: [&str; 2] = [
    "DROP AGGREGATE IF EXISTS flowtrace_histogram(double precision, double precision, double precision, integer)",
    "DROP FUNCTION IF EXISTS flowtrace_histogram_step(integer[], double precision, double precision, double precision, integer)",
];

/// The histogram of `expr` (milliseconds) with `aggregate` (`histogram` or `flowtrace_histogram`). Values below
/// `MIN_MS` are raised to a tenth of it before the logarithm, which zero has not: they still count in bucket 0.
pub(crate) fn of(aggregate: &str, expr: &str) -> String {
    format!(
        "{aggregate}(ln(greatest({expr}, {floor})), ln({MIN_MS}), ln({MAX_MS}), {BUCKETS}) FILTER (WHERE {expr} IS NOT NULL)",
        floor = MIN_MS / 10.0
    )
}
