//! The `flowtrace` program for the integration tests that run it as processes: the same entry point and allocator as
//! the `flowtrace` binary (api/src/main.rs), built by `cargo test` with the tests (a test can find only the binaries
//! of its own package).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowtrace::cli::main().await
}
