//! flowtrace: the store and GraphQL API for workflow execution traces.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db_commands;
pub mod domain;
pub mod embedded_pg;
pub mod embedded_shared;
pub mod error;
pub mod export;
pub mod graphql;
pub mod http;
pub mod import;
pub mod limits;
pub mod live;
pub mod log_limit;
pub mod metrics;
pub mod seed;
pub mod store;
pub mod webhooks;
