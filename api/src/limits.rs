//! Size limits on what clients send. Every refusal names the limit it hit.

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
            default_page_size: 100,
        }
    }
}
