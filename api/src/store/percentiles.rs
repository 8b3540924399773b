//! Percentiles from the aggregates' duration histograms (`migration::histogram`): the histograms of a range are
//! summed element-wise in SQL, and the merged one is read at a rank here.
//!
//! A percentile is the nearest-rank one (the `⌈p·n⌉`-th shortest duration), placed inside the bucket that holds that
//! rank by geometric interpolation. The exact value lies in the same bucket, so the relative error stays below the
//! bucket ratio minus one. Durations under the first bucket are reported as its lower edge, and over the last as its
//! upper edge.

use chrono::TimeDelta;
use migration::histogram::{BUCKETS, MIN_MS, ratio};

use super::{StoreError, StoreResult};

/// The longest range `workflowAnalytics` and `dependencyGraph` merge, in days: it bounds the aggregate rows a query
/// reads.
pub const MAX_RANGE_DAYS: i64 = 31;

/// BAD_USER_INPUT for a range longer than `MAX_RANGE_DAYS` (and, through `check_range`, for one that ends first).
pub fn check_long_range(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> StoreResult<()> {
    super::traces::check_range(Some(from), Some(to))?;
    if to - from > TimeDelta::days(MAX_RANGE_DAYS) {
        return Err(StoreError::BadInput(format!("the range may span at most {MAX_RANGE_DAYS} days")));
    }
    Ok(())
}

/// The median and the tail.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

impl Percentiles {
    /// From a merged histogram; all null without one (no durations).
    pub fn of(histogram: Option<&[i64]>) -> Percentiles {
        let at = |p| histogram.and_then(|h| percentile(h, p));
        Percentiles { p50: at(0.5), p95: at(0.95), p99: at(0.99) }
    }
}

/// The `p`-quantile (0 < p ≤ 1) of a histogram of `BUCKETS + 2` counts; `None` when it counts nothing.
pub fn percentile(histogram: &[i64], p: f64) -> Option<f64> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
    let mut below = 0;
    for (bucket, &count) in histogram.iter().enumerate() {
        if count > 0 && below + count >= rank {
            let r = ratio();
            let bucket = bucket as i32;
            if bucket == 0 {
                return Some(MIN_MS);
            }
            let edge = MIN_MS * r.powi(bucket.min(BUCKETS + 1) - 1);
            if bucket > BUCKETS {
                return Some(edge);
            }
            // Ranks spread evenly through the bucket, each at the middle of its share.
            let within = ((rank - below) as f64 - 0.5) / count as f64;
            return Some(edge * r.powf(within));
        }
        below += count;
    }
    None
}

/// SQL summing the `duration_histogram`s of the rows of `source` that match `filter`, per value of `keys` (columns of
/// `source`, comma separated): those columns and `histogram bigint[]`. Keys whose rows have no histogram are absent.
pub fn merged(source: &str, keys: &str, filter: &str) -> String {
    format!(
        "SELECT {keys}, array_agg(c ORDER BY i) AS histogram FROM (
            SELECT {keys}, i, sum(c)::bigint AS c
            FROM {source}, unnest(duration_histogram) WITH ORDINALITY AS h(c, i)
            WHERE {filter} GROUP BY {keys}, i
         ) m GROUP BY {keys}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(durations: &[f64]) -> Vec<i64> {
        let mut h = vec![0; (BUCKETS + 2) as usize];
        let (lo, hi) = (MIN_MS.ln(), migration::histogram::MAX_MS.ln());
        for d in durations {
            let x = d.max(MIN_MS / 10.0).ln();
            let b = if x < lo {
                0
            } else if x >= hi {
                BUCKETS + 1
            } else {
                ((x - lo) / (hi - lo) * f64::from(BUCKETS)) as i32 + 1
            };
            h[b as usize] += 1;
        }
        h
    }

    fn exact(durations: &[f64], p: f64) -> f64 {
        let mut sorted = durations.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_stay_within_the_bucket_ratio_of_the_exact_ones() {
        let durations: Vec<f64> = (1..=1000).map(|i| f64::from(i).powf(1.7) * 0.37).collect();
        let h = histogram_of(&durations);
        for p in [0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let (got, want) = (percentile(&h, p).unwrap_or(f64::NAN), exact(&durations, p));
            assert!((got - want).abs() / want < ratio() - 1.0, "p{p}: {got} against {want}");
        }
    }

    #[test]
    fn empty_histograms_have_no_percentiles_and_the_ends_report_their_edges() {
        assert_eq!(Percentiles::of(None), Percentiles::default());
        assert_eq!(percentile(&vec![0; (BUCKETS + 2) as usize], 0.5), None);
        assert_eq!(percentile(&histogram_of(&[0.0, 0.0]), 0.5), Some(MIN_MS));
        let over = percentile(&histogram_of(&[2e9]), 0.99).unwrap_or(0.0);
        assert!((over - migration::histogram::MAX_MS).abs() < 1.0, "{over}");
    }

    #[test]
    fn ranges_longer_than_the_bound_are_refused() {
        let from = chrono::Utc::now();
        assert!(check_long_range(from, from + TimeDelta::days(MAX_RANGE_DAYS)).is_ok());
        assert!(matches!(
            check_long_range(from, from + TimeDelta::days(MAX_RANGE_DAYS + 1)),
            Err(StoreError::BadInput(_))
        ));
        assert!(matches!(check_long_range(from, from - TimeDelta::seconds(1)), Err(StoreError::BadInput(_))));
    }
}
