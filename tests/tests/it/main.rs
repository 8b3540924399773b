//! flowtrace integration tests: one binary, real PostgreSQL, real HTTP.

mod analytics;
mod bad_input;
mod config_vars;
mod embedded;
mod embedded_processes;
mod endpoints;
mod fixtures;
mod harness;
mod ids;
mod ingest;
mod live;
mod migrations;
mod modes;
mod process;
mod queries;
mod reliability;
mod schema;
mod security;
mod seed;
mod startup;
mod time_travel;
mod webhooks;
mod ws_client;
