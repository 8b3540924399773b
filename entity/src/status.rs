//! The enums stored as text columns (their SCREAMING_CASE names), decoded once, when a row is read: an unknown value
//! fails the read instead of turning into some default.

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            async_graphql::Enum, sea_orm::DeriveActiveEnum, sea_orm::EnumIter, serde::Serialize,
            Copy, Clone, Debug, PartialEq, Eq, Hash,
        )]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[sea_orm(string_value = $text)]
                #[serde(rename = $text)]
                $variant
            ),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                $name::parse(text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_enum!(
    /// Lifecycle of a session.
    SessionStatus {
        /// Started and not ended.
        Running = "RUNNING",
        /// Ended as it should.
        Completed = "COMPLETED",
        /// Ended by a failure.
        Failed = "FAILED",
        /// Stopped before it ended.
        Cancelled = "CANCELLED",
    }
);
text_enum!(
    /// Outcome of one data transfer.
    TraceStatus {
        /// The data arrived.
        Success = "SUCCESS",
        /// The transfer failed; the error belongs to the node that emitted it.
        Error = "ERROR",
        /// The data arrived with a warning.
        Warning = "WARNING",
    }
);
text_enum!(
    /// What a node reported.
    EventType {
        /// It received data.
        Input = "INPUT",
        /// It emitted data.
        Output = "OUTPUT",
        /// It failed.
        Error = "ERROR",
        /// A log line.
        Log = "LOG",
        /// It started running.
        Start = "START",
        /// It finished.
        Complete = "COMPLETE",
    }
);
