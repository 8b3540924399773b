//! What a NOTIFY carries: one small wake-up per write transaction, sent on commit on one channel. A wake-up is never
//! the data: listeners read the rows themselves by cursor (`store::live`), so a lost notification delays delivery,
//! never loses it.

use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

use super::StoreResult;

/// The channel every wake-up is sent on and the listener listens to.
pub const CHANNEL: &str = "flowtrace";

/// What the transaction wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Trace,
    Event,
    /// A session started or ended (a row of the session change log).
    Session,
}

/// The payload, as JSON with one-letter keys: a NOTIFY payload holds at most 8000 bytes and ids up to 128 characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wakeup {
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "s")]
    pub session_id: String,
    #[serde(rename = "w")]
    pub workflow_id: String,
    /// The highest `seq` written: of the traces or events, or of the session change log.
    #[serde(rename = "q")]
    pub seq: i64,
}

impl Wakeup {
    /// Queues the notification in `tx`: PostgreSQL sends it when, and only if, the transaction commits.
    pub async fn send(&self, tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(self.encode()).execute(&mut **tx).await?;
        Ok(())
    }

    fn encode(&self) -> String {
        #[expect(clippy::expect_used, reason = "strings, an integer and a unit variant always serialise")]
        serde_json::to_string(self).expect("a wake-up serialises")
    }

    pub fn decode(payload: &str) -> Result<Wakeup, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_stable() {
        let wakeup = Wakeup { kind: Kind::Session, session_id: "s".into(), workflow_id: "w".into(), seq: 7 };
        assert_eq!(wakeup.encode(), r#"{"k":"session","s":"s","w":"w","q":7}"#);
        assert_eq!(Wakeup::decode(r#"{"k":"trace","s":"a","w":"b","q":1}"#).ok().map(|w| w.kind), Some(Kind::Trace));
        assert!(Wakeup::decode(r#"{"k":"other","s":"a","w":"b","q":1}"#).is_err());
    }
}
