//! `tzkms serve`: build the application, serve it, reload on SIGHUP, stop on SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use tzkms::app::Application;
use tzkms::config::Config;
use tzkms::startup;
use tzkms::watermark;
use tzkms::watermark::file::Opened;

use crate::cli::config::security_summary;

use super::{import_line, VERSION};

/// Whether this process runs as root (uid 0), read from the owner of `/proc/self`.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub(crate) fn serve(
    mut config: Config,
    listen: &[SocketAddr],
    reread: impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        config.server.listen = listen.to_vec();
    }
    let reread = std::sync::Arc::new(reread);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let data_dir = config.data_dir();
        if config.data_dir.is_none() {
            // The default ./tzkms-data is made on first start; a configured directory must exist, so a
            // mistyped path never becomes a fresh signer with a new key while the real one gets 404.
            startup::ensure_data_dir(&data_dir)?;
        }
        startup::existing_data_dir(&data_dir)?;
        let _lock = startup::DataDirLock::acquire(&data_dir)?;
        if running_as_root() {
            tracing::warn!(
                "running as root: a flaw in tzkms or a dependency would own the whole host; run it as a \
                 dedicated user (deploy/tzkms.service does)"
            );
        }
        let app = Application::build(&config).await?;
        let signer = app.signer().clone();
        let report = app.report();
        for skipped in &report.skipped {
            tracing::warn!("not served: {skipped}");
        }
        match &report.watermarks {
            Some(Opened::Initialized) => tracing::info!(
                store = %data_dir.join(watermark::file::STORE_FILE).display(),
                "fresh data directory: initialised a new, empty watermark store"
            ),
            Some(Opened::Loaded(marks)) => tracing::info!(marks, "watermark store loaded"),
            None => {}
        }
        if config.watermark.max_chains == 0 {
            tracing::warn!(
                "watermark.max_chains = 0: no bound on chains; a caller allowed to sign consensus payloads \
                 can grow the watermark store with invented chain ids"
            );
        }
        for pkh in &config.watermark.unprotected_keys {
            tracing::warn!(
                %pkh,
                "DOUBLE-SIGNING PROTECTION IS OFF for this key (watermark.unprotected_keys): it will sign \
                 conflicting blocks and attestations if asked"
            );
        }
        if let Some(addr) = app.ops_addr() {
            tracing::info!(%addr, "operations listener: /metrics, /healthz, /readyz");
            println!("metrics on http://{addr}/metrics");
        }
        if let Some(pkh) = report.generated {
            tracing::info!(%pkh, "no key configured: generated a P-256 key");
            println!("Generated a P-256 key on first start: {pkh}");
            println!(
                "Point octez-client at it: {}",
                app.endpoints()
                    .first()
                    .map_or_else(String::new, |(scheme, addr)| import_line(&pkh, scheme, *addr))
            );
        }
        let rules = signer.rules();
        tracing::info!(
            version = VERSION,
            data_dir = %config.data_dir().display(),
            keys = rules.keyring.len(),
            "tzkms starting"
        );
        for backend in rules.keyring.backends() {
            tracing::info!(backend = %app.observers().describe(backend.kind()), "key backend");
        }
        if rules.keyring.is_empty() {
            tracing::warn!(
                "no key is served: every signing request will get 404 and readiness fails; {}, then \
                 reload with SIGHUP (systemctl reload tzkms)",
                startup::NO_KEY_FIX
            );
        }
        tracing::info!(store = %signer.watermarks().describe(), "watermark store");
        if config.metrics.listen.is_none() {
            tracing::info!("no operations listener (metrics.listen): no /metrics, /healthz or /readyz");
        }
        for (pkh, key) in rules.keyring.sorted() {
            tracing::info!(%pkh, name = %key.info.name, backend = key.backend.kind(), "serving key");
        }
        for line in security_summary(&config, &rules.keyring, &rules.auth, &rules.policy) {
            tracing::info!("{line}");
        }
        drop(rules);
        signer.metrics().config_loaded_now();
        // Handlers are installed before the address is announced, so a SIGTERM sent as soon as the
        // address is known still shuts down gracefully.
        let shutdown = shutdown_signal()?;
        let running = tzkms::reload::Running {
            azure: report.azure.clone(),
            tls: app.tls(),
        };
        reload_on_sighup(signer.clone(), config.clone(), running, reread)?;
        for (scheme, addr) in app.endpoints() {
            tracing::info!(%addr, scheme, "listening");
            println!("listening on {scheme}://{addr}");
        }
        use std::io::Write as _;
        std::io::stdout().flush()?;
        app.run_until_stopped(shutdown).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// On every SIGHUP, re-reads the configuration file and applies keys, authorized keys, policy and TLS
/// files at once (see `tzkms::reload`); a failed reload changes nothing and says why. Reloads run one at a
/// time, each against the configuration last applied.
pub(crate) fn reload_on_sighup(
    signer: std::sync::Arc<tzkms::signer::Signer>,
    mut applied: Config,
    running: tzkms::reload::Running,
    reread: std::sync::Arc<impl Fn() -> anyhow::Result<Config> + Send + Sync + 'static>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let result = match reread() {
                Ok(new) => tzkms::reload::reload(&signer, &applied, &new, &running)
                    .await
                    .map(|report| (new, report)),
                Err(e) => Err(e),
            };
            match result {
                Ok((new, report)) => {
                    signer.metrics().reload(true);
                    log_reload(&report, &new, &signer);
                    // The settings that need a restart stay as they run: compare the next reload with
                    // them, not with the file.
                    let mut kept = applied.clone();
                    kept.keys = new.keys;
                    kept.auth = new.auth;
                    kept.policy = new.policy;
                    if let (Some(tls), Some(file)) = (&mut kept.server.tls, new.server.tls) {
                        tls.certificate = file.certificate;
                        tls.private_key = file.private_key;
                        tls.client_ca = file.client_ca;
                    }
                    applied = kept;
                }
                Err(e) => {
                    signer.metrics().reload(false);
                    tracing::error!("SIGHUP: reload failed, still serving the previous configuration: {e:#}");
                }
            }
        }
    });
    Ok(())
}

pub(crate) fn log_reload(report: &tzkms::reload::Reloaded, new: &Config, signer: &tzkms::signer::Signer) {
    for setting in &report.needs_restart {
        tracing::warn!(
            "SIGHUP: {setting} changed in the configuration file: it needs a restart (systemctl restart \
             tzkms); the running value is kept"
        );
    }
    for s in &report.skipped {
        tracing::warn!("not served: {s}");
    }
    for pkh in &report.added {
        tracing::info!(%pkh, "SIGHUP: key added");
    }
    for pkh in &report.removed {
        tracing::warn!(%pkh, "SIGHUP: key removed: requests for it now get 404");
    }
    if let Some(fingerprint) = &report.tls_certificate {
        tracing::info!(certificate = %format!("sha256:{fingerprint}"), "SIGHUP: TLS certificate reloaded");
    }
    let rules = signer.rules();
    for line in security_summary(new, &rules.keyring, &rules.auth, &rules.policy) {
        tracing::info!("{line}");
    }
    if report.keys == 0 {
        tracing::warn!("no key is served: {}", startup::NO_KEY_FIX);
    }
    tracing::info!(
        keys = report.keys,
        added = report.added.len(),
        removed = report.removed.len(),
        "SIGHUP: configuration reloaded: keys, authorized keys and policy applied"
    );
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered when this is called.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
    })
}
