//! `tzkms-load`: see `tzkms-load --help` and docs/performance.md.

use clap::Parser;
use tzkms_load::run::{render, run, Options};

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&options))?;
    print!("{}", render(&report));
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if report.bad_signatures() > 0 {
        anyhow::bail!("{} signatures did not verify", report.bad_signatures());
    }
    if report.errors() > 0 && !options.allow_errors {
        anyhow::bail!(
            "{} requests failed (--allow-errors to exit 0 anyway)",
            report.errors()
        );
    }
    Ok(())
}
