//! flowtrace integration tests: one binary, real PostgreSQL, real HTTP.

mod analytics;
mod bad_input;
mod embedded;
mod export;
mod fixtures;
mod harness;
mod ids;
mod ingest;
mod live;
mod migrations;
mod modes;
mod queries;
mod reliability;
mod schema;
mod security;
mod seed;
mod time_travel;
mod webhooks;
mod ws_client;
