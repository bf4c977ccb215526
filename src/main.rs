//! The `kinitro` binary: see `kinitro --help`.

/// mimalloc instead of glibc's allocator: the executor's arbiters and the reference miner allocate
/// and free small buffers at every step (request heads, bodies, JSON), and glibc's malloc and free
/// were a twentieth of the arbiters' time and a tenth of the miner's. With mimalloc the executor's
/// CPU per step without images fell by about 5 % (the arbiters' by a fifth, the episode workers' by
/// 3 %; measured with `benches/executor.sh`). MuJoCo and Mesa keep the C library's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kinitro::cli::main()
}
