//! flowtrace: the store and GraphQL API for workflow execution traces.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod domain;
pub mod embedded_pg;
pub mod error;
pub mod export;
pub mod graphiql;
pub mod graphql;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod seed;
pub mod store;
pub mod webhooks;
