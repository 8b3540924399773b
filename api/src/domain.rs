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
