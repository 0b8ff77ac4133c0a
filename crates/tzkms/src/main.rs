//! The `tzkms` binary: a thin entry point; the command line lives in [`cli`].

mod cli;

fn main() -> anyhow::Result<()> {
    cli::run()
}
