//! `sata`: run symmetry-aware Taylor attention on `.npy` files and inspect configurations
//! (`sata --help`; the code is `sata::cli`).

fn main() -> std::process::ExitCode {
    sata::cli::main()
}
