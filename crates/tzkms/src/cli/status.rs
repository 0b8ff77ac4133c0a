//! `tzkms status`: asks a running signer's operations listener (`GET /status`) what it serves and how it
//! is doing, and prints it as a table (or the JSON).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tzkms::config::Config;
use tzkms::status::Status;

/// How long the signer may take to answer (its readiness probes are bounded by health.probe_timeout_ms).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Exit code when the signer answered but is not ready.
pub(crate) const NOT_READY_EXIT: i32 = 2;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The operations listener of the signer, e.g. http://127.0.0.1:9732. Default: metrics.listen of the
    /// configuration.
    #[arg(long)]
    url: Option<String>,
    /// Print the JSON of GET /status instead of a table.
    #[arg(long)]
    json: bool,
}

/// The base URL: `--url`, else `metrics.listen` (an unspecified address is asked on loopback).
fn base_url(config: &Config, args: &StatusArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.url {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let Some(mut addr) = config.metrics.listen else {
        bail!(
            "no operations listener to ask: the configuration has no metrics.listen. Set [metrics] listen = \
             \"127.0.0.1:9732\" in the signer's configuration (and restart it), then run `tzkms --config <file> \
             status`, or pass --url http://<host>:<port>"
        );
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("http://{addr}"))
}

/// Why nothing answered at `url`, and how to point the command elsewhere.
fn unreachable(url: &str, error: &reqwest::Error) -> String {
    use tzkms::azure::connection::{cause, Cause};
    let why = match cause(error) {
        Cause::Refused => "connection refused: nothing listens there".to_owned(),
        Cause::Timeout => format!("no answer within {}s", TIMEOUT.as_secs()),
        Cause::Dns(detail) => format!("DNS lookup failed ({detail})"),
        Cause::Closed(detail) => format!("the connection was closed ({detail})"),
        Cause::Tls { detail, .. } | Cause::Tunnel(detail) | Cause::Other(detail) => detail,
    };
    format!(
        "cannot reach a tzkms operations listener at {url}: {why}. Is the signer running, with its operations \
         listener ([metrics] listen, or serve --metrics-listen) on this address? Pass --url http://<host>:<port> \
         or the signer's configuration with --config"
    )
}

pub(crate) async fn status(config: Config, args: &StatusArgs) -> anyhow::Result<i32> {
    let base = base_url(&config, args)?;
    let url = format!("{base}/status");
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .context("HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(unreachable(&base, &e)))?;
    let code = response.status();
    let text = response.text().await.context("reading the answer")?;
    if !code.is_success() {
        bail!(
            "{url} answered HTTP {code}: is this a tzkms operations listener of version {} or later?",
            env!("CARGO_PKG_VERSION")
        );
    }
    let status: Status = serde_json::from_str(&text).with_context(|| {
        format!(
            "{url} did not answer a tzkms status: {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    if args.json {
        outln!("{text}");
    } else {
        out!("{}", render(&base, &status));
    }
    Ok(if status.ready { 0 } else { NOT_READY_EXIT })
}

/// The table.
pub(crate) fn render(base: &str, s: &Status) -> String {
    let mut out = String::new();
    let state = if s.ready {
        "ready".to_owned()
    } else {
        format!("NOT READY ({})", s.failed.join(", "))
    };
    let _ = writeln!(out, "tzkms {} at {base}: {state}", s.version);
    let _ = writeln!(out, "\nreadiness:");
    let width = s.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &s.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:width$}  {}", c.name, c.detail);
    }
    let _ = writeln!(out, "\nkeys ({}):", s.keys.len());
    for k in &s.keys {
        let signed: u64 = k.signatures.values().sum();
        let _ = writeln!(out, "  {}  {} {}  signatures: {signed}", k.pkh, k.backend, k.name);
        if k.marks.is_empty() {
            let _ = writeln!(out, "      no mark yet");
        }
        for m in &k.marks {
            let _ = writeln!(
                out,
                "      {:<14} level {:>10} round {:>3}  on {}",
                m.kind, m.level, m.round, m.chain
            );
        }
    }
    if let Some(why) = &s.marks_error {
        let _ = writeln!(out, "  marks unavailable: {why}");
    }
    for v in &s.vaults {
        let health = if v.healthy { "healthy" } else { "FAILING" };
        let _ = writeln!(out, "\nvault {}: {health}: {}", v.vault, v.detail);
        let latency = v
            .latency_ms
            .iter()
            .map(|(op, ms)| format!("{op} {ms:.1} ms"))
            .collect::<Vec<_>>()
            .join(", ");
        if !latency.is_empty() {
            let _ = writeln!(out, "  mean latency: {latency}");
        }
        let _ = writeln!(
            out,
            "  billable operations: {}, estimated cost ${:.6} (at ${} per 10,000)",
            v.billable_operations, v.estimated_cost_usd, v.price_per_10k_usd
        );
    }
    let _ = writeln!(out, "\nsignatures so far: {}", s.signatures);
    if !s.vaults.is_empty() {
        let _ = writeln!(out, "estimated Azure cost so far: ${:.6}", s.estimated_cost_usd);
    }
    out
}
