//! Domain enums shared by the store and the API. Stored as their SCREAMING_CASE names in text columns.

use async_graphql::Enum;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// Lifecycle of a session.
    SessionStatus { Running = "RUNNING", Completed = "COMPLETED", Failed = "FAILED", Cancelled = "CANCELLED" }
);
text_enum!(
    /// Outcome of one data transfer.
    TraceStatus { Success = "SUCCESS", Error = "ERROR", Warning = "WARNING" }
);
text_enum!(
    /// What a node reported.
    EventType { Input = "INPUT", Output = "OUTPUT", Error = "ERROR", Log = "LOG", Start = "START", Complete = "COMPLETE" }
);

/// Whether PostgreSQL's `timestamptz` can hold `at`: from 4713-11-24 BC (its first Julian day) on. chrono reads times
/// from year -262144, and its last year (262143) is within PostgreSQL's (294276).
pub fn storable_time(at: &chrono::DateTime<chrono::Utc>) -> bool {
    chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .is_some_and(|first| at.naive_utc() >= first)
}
