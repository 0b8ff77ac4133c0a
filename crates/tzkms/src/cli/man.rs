//! `tzkms man --out-dir <dir>`: man pages generated from the clap definitions, tzkms.1 and one page per
//! subcommand (tzkms-keys-generate.1, …). The Debian package ships them; `cargo install` users can
//! write them into ~/.local/share/man/man1.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};

/// Write man pages (tzkms.1 and one tzkms-<subcommand>.1 per subcommand) into a directory.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Directory to write the pages into; created if missing. Existing pages of the same name are
    /// replaced.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub(crate) fn man(args: &ManArgs) -> anyhow::Result<()> {
    let dir = &args.out_dir;
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the man page directory {}: choose a writable --out-dir",
            dir.display()
        )
    })?;
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    for path in written {
        outln!("{}", path.display());
    }
    Ok(())
}

/// One page for `cmd` and, depth first, one for each visible subcommand.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    // The page's footer names the package version only: the long --version (commit, compiler) would
    // make every page differ between two builds of the same release.
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("tzkms {}", env!("CARGO_PKG_VERSION")))
        .manual("tzkms manual");
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render(&mut out)?;
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
