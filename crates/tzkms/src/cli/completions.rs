//! `tzkms completions <shell>`: a shell completion script generated from the clap definitions, so it
//! always matches the binary that prints it.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Print a shell completion script to stdout (bash, zsh, fish, elvish, powershell).
///
/// bash: tzkms completions bash > ~/.local/share/bash-completion/completions/tzkms
///
/// zsh: tzkms completions zsh > ~/.zfunc/_tzkms (with ~/.zfunc in $fpath before compinit)
///
/// fish: tzkms completions fish > ~/.config/fish/completions/tzkms.fish
///
/// The Debian package installs all three system-wide.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "tzkms", &mut std::io::stdout().lock());
    Ok(())
}
