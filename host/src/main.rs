//! The `switchyard` binary: everything lives in the library.

/// Records are allocated on the consumer's thread and freed on a worker's
/// or the producer's; mimalloc handles that pattern with less work than the
/// system allocator (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
