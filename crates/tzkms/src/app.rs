//! The application, built one way from a configuration: the watermark store, the key backends and what
//! they report, the signer, the signing listeners (HTTP and HTTPS) and the operations listener, all bound
//! (port 0 picks a free port, and the bound addresses are known) before anything is served. `tzkms serve`,
//! every in-process test server, the load tool and the benches start tzkms through [`Application`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::backend::file::FileBackend;
use crate::backend::KeyBackend;
use crate::config::{Config, HealthConfig};
use crate::health::Observers;
use crate::ops::Ops;
use crate::server::tls::Tls;
use crate::server::{App, Connections, ServerError};
use crate::signer::Signer;
use crate::startup::{StartupReport, WrapFiles};
use crate::watermark::Watermarks;

/// A built tzkms: listeners bound, nothing served until [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application {
    signer: Arc<Signer>,
    server: App,
    ops: Option<TcpListener>,
    observers: Observers,
    health: HealthConfig,
    report: StartupReport,
}

/// Options of [`Application::build`] that a configuration file cannot express.
pub struct Builder<'c> {
    config: &'c Config,
    wrap_files: Option<WrapFiles>,
    watermarks: Option<Arc<dyn Watermarks>>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("wrap_files", &self.wrap_files.is_some())
            .field("watermarks", &self.watermarks)
            .finish_non_exhaustive()
    }
}

impl<'c> Builder<'c> {
    /// Serves the file keys through the backend `wrap` makes of the file backend (a test's counting or
    /// failing backend). A reload (SIGHUP) loads plain files again.
    pub fn wrap_file_backend(
        mut self,
        wrap: impl FnOnce(FileBackend) -> Arc<dyn KeyBackend> + Send + 'static,
    ) -> Self {
        self.wrap_files = Some(Box::new(wrap));
        self
    }

    /// Uses `store` instead of the watermark store the configuration names.
    pub fn watermarks(mut self, store: Arc<dyn Watermarks>) -> Self {
        self.watermarks = Some(store);
        self
    }

    /// Builds the signer from the configuration and binds every listener. Must run inside a tokio
    /// runtime (the stores' and backends' background tasks).
    pub async fn build(self) -> anyhow::Result<Application> {
        let config = self.config;
        let store = match self.watermarks {
            Some(store) => (store, None),
            None => crate::startup::open_watermarks(config).await?,
        };
        let (signer, report) = crate::startup::build_signer_from(config, store, self.wrap_files).await?;
        let server = App::bind(signer.clone(), &config.server).await?;
        let ops = match config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("metrics listener on {addr}"))?,
            ),
            None => None,
        };
        Ok(Application {
            signer,
            server,
            ops,
            observers: report.observers.clone(),
            health: config.health.clone(),
            report,
        })
    }
}

impl Application {
    /// Builds tzkms as `config` says; see [`Builder::build`].
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::builder(config).build().await
    }

    /// [`Application::build`] with options.
    pub fn builder(config: &Config) -> Builder<'_> {
        Builder {
            config,
            wrap_files: None,
            watermarks: None,
        }
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// `("http" | "https", address)` of every signing listener, HTTP first.
    pub fn endpoints(&self) -> Vec<(&'static str, SocketAddr)> {
        self.server.endpoints()
    }

    /// Every signing listener's address, HTTP first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server.local_addrs()
    }

    /// The operations listener's address (`/metrics`, `/healthz`, `/readyz`, `/status`), if configured.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The HTTPS configuration, to reload it (SIGHUP) while serving.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.server.tls()
    }

    /// Connection bounds and their counters.
    pub fn connections(&self) -> Arc<Connections> {
        self.server.connections()
    }

    /// What startup did that the operator should hear about.
    pub fn report(&self) -> &StartupReport {
        &self.report
    }

    /// What the backends report to the operator.
    pub fn observers(&self) -> &Observers {
        &self.observers
    }

    /// Serves until `shutdown` resolves; then readiness turns red ("shutting down"), the signing listeners
    /// stop accepting and the requests in flight finish. The operations listener answers until the
    /// process ends.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        if let Some(listener) = self.ops {
            tokio::spawn(crate::ops::serve(
                listener,
                Ops {
                    signer: self.signer.clone(),
                    observers: self.observers,
                    connections: Some(self.server.connections()),
                    health: self.health,
                },
            ));
        }
        let draining = self.signer;
        self.server
            .run(async move {
                shutdown.await;
                draining.start_draining();
            })
            .await
    }
}
