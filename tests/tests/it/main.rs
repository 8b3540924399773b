//! flowtrace integration tests: one binary, real PostgreSQL, real HTTP.

mod analytics;
mod bad_input;
mod embedded;
mod fixtures;
mod harness;
mod hostile_input;
mod ingest;
mod live;
mod migrations;
mod modes;
mod queries;
mod reliability;
mod request_limits;
mod schema;
mod security;
mod seed;
mod slow_clients;
mod time_travel;
mod webhooks;
mod ws_client;
mod ws_protocol;
