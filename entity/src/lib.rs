//! SeaORM entities, one per flowtrace table. Column names follow `migration`; the store reads rows into these models.

pub mod event;
pub mod session;
pub mod status;
pub mod trace;
