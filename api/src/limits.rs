//! Limits on what clients send and how long they may keep the server waiting. Every refusal names the limit it hit.

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct Limits {
    /// Most traces or events accepted by one recordTraces / recordEvents call.
    #[arg(long, env = "FLOWTRACE_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Most bytes of one trace payload or event data/metadata, as JSON text.
    #[arg(long, env = "FLOWTRACE_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Most characters of an identifier or name (node, port, workflow, graph, user ids and names, codes).
    #[arg(long, env = "FLOWTRACE_MAX_NAME_CHARS", default_value_t = 512)]
    pub max_name_chars: usize,
    /// Most characters of a free text field (preview, error message, stack).
    #[arg(long, env = "FLOWTRACE_MAX_TEXT_CHARS", default_value_t = 64 * 1024)]
    pub max_text_chars: usize,
    /// Most nesting levels of payload JSON.
    #[arg(long, env = "FLOWTRACE_MAX_JSON_DEPTH", default_value_t = 64)]
    pub max_json_depth: usize,
    /// Largest page a connection returns (`first` / `last`).
    #[arg(long, env = "FLOWTRACE_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: usize,
    /// Deepest selection nesting a query may have.
    #[arg(long, env = "FLOWTRACE_MAX_DEPTH", default_value_t = 16)]
    pub max_depth: usize,
    /// Highest query complexity: each field costs 1, and a connection multiplies its selection by its page size.
    #[arg(long, env = "FLOWTRACE_MAX_COMPLEXITY", default_value_t = 100_000)]
    pub max_complexity: usize,
    /// Most WebSocket connections and HTTP streams (SSE, multipart) this process serves at once.
    #[arg(long, env = "FLOWTRACE_MAX_WS_CONNECTIONS", default_value_t = 10_000)]
    pub max_ws_connections: usize,
    /// Most subscriptions open on one WebSocket connection.
    #[arg(long, env = "FLOWTRACE_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = 100)]
    pub max_subscriptions_per_connection: usize,
    /// Seconds a new WebSocket has to send `connection_init` before it is closed (4408).
    #[arg(long, env = "FLOWTRACE_WS_INIT_TIMEOUT_SECS", default_value_t = 10)]
    pub ws_init_timeout_secs: u64,
    /// Seconds between keep-alive pings on WebSockets.
    #[arg(long, env = "FLOWTRACE_WS_KEEPALIVE_SECS", default_value_t = 15)]
    pub ws_keepalive_secs: u64,
    /// Seconds one WebSocket write may wait for a client that does not read before it is closed (4429) or dropped;
    /// an SSE or multipart stream whose client does not read for as long is given up.
    #[arg(long, env = "FLOWTRACE_WS_SEND_TIMEOUT_SECS", default_value_t = 20)]
    pub ws_send_timeout_secs: u64,
    /// Bytes of kernel send buffer each client connection may hold (SO_SNDBUF; 0 leaves it to the kernel's
    /// autotuning, up to `net.ipv4.tcp_wmem`'s maximum). The kernel's TCP memory is shared by every socket of the
    /// machine, the database connections included: left to autotuning, a few hundred clients that stop reading fill
    /// it, and then every connection waits. A client on a link with round-trip time R receives at most about twice
    /// this per R. At most 1 GiB.
    #[arg(
        long,
        env = "FLOWTRACE_SOCKET_SEND_BUFFER_BYTES",
        default_value_t = 128 * 1024,
        value_parser = clap::value_parser!(u32).range(0..=1 << 30)
    )]
    pub socket_send_buffer_bytes: u32,
    /// Seconds a graceful shutdown waits for in-flight requests and WebSocket closes before it stops anyway.
    #[arg(long, env = "FLOWTRACE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Most operations in one HTTP batch (a JSON array of requests); their complexities add up against
    /// max_complexity.
    #[arg(long, env = "FLOWTRACE_MAX_BATCH_OPERATIONS", default_value_t = 100)]
    pub max_batch_operations: usize,
    /// Page size when a query gives neither `first` nor `last`.
    #[arg(long, env = "FLOWTRACE_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub default_page_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            max_payload_bytes: 1024 * 1024,
            max_name_chars: 512,
            max_text_chars: 64 * 1024,
            max_json_depth: 64,
            max_page_size: 1000,
            max_depth: 16,
            max_complexity: 100_000,
            max_ws_connections: 10_000,
            max_subscriptions_per_connection: 100,
            ws_init_timeout_secs: 10,
            ws_keepalive_secs: 15,
            ws_send_timeout_secs: 20,
            socket_send_buffer_bytes: 128 * 1024,
            shutdown_timeout_secs: 10,
            max_batch_operations: 100,
            default_page_size: 100,
        }
    }
}
