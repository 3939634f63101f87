//! The `sata` command line: run symmetry-aware Taylor attention on `.npy` files, inspect
//! configurations, emit kernels. The `sata` binary is [`main`]; [`run`] runs the same code in
//! the caller's process (the quick-start example does).

mod args;
mod attend;
mod backward;
mod cuda_report;
mod emit;
mod info;
mod inputs;
mod npy;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Runs one command line (`args[0]` is the program name) and returns its exit status: 0, 1
/// with one `sata: error: ...` line on stderr for bad input, 2 for argument syntax errors.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version requests are not failures; clap says which.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let result = match cli.command {
        Command::Attend(args) => attend::run(&args),
        Command::Info(args) => info::run(&args),
        Command::Emit(args) => emit::run(&args),
        Command::Backward(args) => backward::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sata: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The `sata` binary: [`run`] on the process's arguments. A panic is a bug in sata, never
/// the user's fault; it is reported in one line instead of a trace.
pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("sata: internal error (please report): {info}");
    }));
    run(std::env::args_os())
}
