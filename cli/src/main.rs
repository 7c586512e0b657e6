//! The `bucketclone` binary: everything lives in the library (`lib.rs`).

/// mimalloc instead of the system allocator: a copy allocates and frees many small buffers
/// on many threads, where glibc's per-thread arenas cost CPU and keep memory (bench/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bucketclone::main()
}
