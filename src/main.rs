//! The `kinitro` binary: see `kinitro --help`.

fn main() -> std::process::ExitCode {
    kinitro::cli::main()
}
