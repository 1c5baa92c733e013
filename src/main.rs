//! The `fathom` binary: a thin command-line layer over the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
