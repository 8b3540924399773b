//! Repeated log lines are rate-limited: each place in the code that logs (a callsite) writes at most `BURST` lines per
//! `WINDOW`; the rest of that window is dropped and counted in `flowtrace_log_lines_dropped_total`. A flood of the
//! same warning (a slow pool acquire under overload, say) then costs neither the disk nor the log reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::{Context, Filter, Layer};

pub const BURST: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
pub struct RateLimit {
    /// Per callsite: when its window began, and how many lines it wrote in it.
    seen: Arc<Mutex<HashMap<Identifier, (Instant, u32)>>>,
}

/// `logs` behind the level filter, then the rate limit. In this order a line below the level never reaches the rate
/// limit (nor its count of dropped lines), and the level filter's hint is the subscriber's: callsites below it are
/// never asked again, and `log` records below it (tungstenite writes one per socket read and write) stop at the
/// `log` crate's level check.
pub fn filtered<S, L>(logs: L, levels: EnvFilter, limit: RateLimit) -> Filtered<Filtered<L, RateLimit, S>, EnvFilter, S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    logs.with_filter(limit).with_filter(levels)
}

impl RateLimit {
    /// Whether one more line from `callsite` may be written at `now`.
    pub fn allow(&self, callsite: Identifier, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = seen.entry(callsite).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        *count <= BURST
    }
}

impl<S: Subscriber> Filter<S> for RateLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let allowed = self.allow(event.metadata().callsite(), Instant::now());
        if !allowed {
            metrics::counter!("flowtrace_log_lines_dropped_total").increment(1);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_below_the_level_never_reach_the_rate_limit() {
        use std::io::Write;
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let (limit, lines) = (RateLimit::default(), Lines::default());
        let writer = lines.clone();
        let logs = tracing_subscriber::fmt::layer().with_writer(move || writer.clone());
        let subscriber =
            tracing_subscriber::registry().with(filtered(logs, EnvFilter::new("info,noisy=warn"), limit.clone()));
        assert_eq!(
            subscriber.max_level_hint(),
            Some(tracing::level_filters::LevelFilter::INFO),
            "the level filter caps what callsites and `log` records are asked for"
        );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..100 {
                tracing::debug!("below the level");
                tracing::info!(target: "noisy", "below this target's level");
                tracing::info!("written");
            }
        });
        let written = String::from_utf8_lossy(&lines.0.lock().unwrap_or_else(|e| e.into_inner())).lines().count();
        assert_eq!(written, BURST as usize);
        let counted = limit.seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert_eq!(counted, 1, "only the callsite that writes is counted");
    }

    #[test]
    fn a_callsite_writes_a_burst_per_window_and_others_are_not_affected() {
        let limit = RateLimit::default();
        let (a, b) = (tracing::Level::WARN, tracing::Level::INFO);
        let (a, b) = (level_callsite(a), level_callsite(b));
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| limit.allow(a.clone(), t0)).count();
        assert_eq!(allowed, BURST as usize, "the first burst of a flood, then nothing");
        assert!(limit.allow(b, t0), "another callsite still logs");
        assert!(limit.allow(a, t0 + WINDOW), "the next window logs again");
    }

    fn level_callsite(level: tracing::Level) -> Identifier {
        // Two distinct static callsites.
        if level == tracing::Level::WARN {
            tracing::callsite::Identifier(&WARN_SITE)
        } else {
            tracing::callsite::Identifier(&INFO_SITE)
        }
    }

    /// Not zero-sized: two zero-sized statics may share an address, and callsites are told apart by address.
    struct Site(#[expect(dead_code, reason = "gives each static its own address")] u8);
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unimplemented!("identity only")
        }
    }
    static WARN_SITE: Site = Site(1);
    static INFO_SITE: Site = Site(2);
}
