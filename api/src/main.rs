// Building GraphQL results allocates per field; glibc's malloc and free were a third of the server's CPU on a page of
// traces (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowtrace::cli::main().await
}
