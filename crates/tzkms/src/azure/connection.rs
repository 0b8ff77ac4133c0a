//! Why an HTTP request to an Azure endpoint (Key Vault, Entra ID, IMDS, Table storage) got no answer, in
//! words a baker can act on. reqwest says "error sending request for url" for every failure; the cause
//! (DNS, a refused connection, an untrusted certificate, a timeout, a proxy) is further down its source
//! chain, where this module looks.

use std::error::Error as StdError;
use std::time::Duration;

use tokio_rustls::rustls;

/// What went wrong on the way to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The host name did not resolve.
    Dns(String),
    /// Nothing listens at the address (TCP RST).
    Refused,
    /// The TLS handshake failed; `untrusted` when the server's certificate chain is not trusted.
    Tls {
        detail: String,
        untrusted: bool,
    },
    /// The server (or the network path) did not answer in time.
    Timeout,
    /// The server closed the connection without an answer.
    Closed(String),
    /// A proxy refused to tunnel to the server.
    Tunnel(String),
    Other(String),
}

/// The proxy reqwest sends a request for `url` through, from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
/// `ALL_PROXY`, upper or lower case, minus `NO_PROXY`), as (variable, proxy URL).
pub(crate) fn proxy_for(url: &reqwest::Url) -> Option<(String, String)> {
    let env = |name: &str| {
        [name.to_owned(), name.to_ascii_lowercase()]
            .into_iter()
            .find_map(|n| std::env::var(&n).ok().filter(|v| !v.is_empty()).map(|v| (n, v)))
    };
    let host = url.host_str()?;
    if let Some((_, no_proxy)) = env("NO_PROXY") {
        let bypass = no_proxy.split(',').map(str::trim).any(|entry| {
            let entry = entry.trim_start_matches('.');
            entry == "*" || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
        });
        if bypass {
            return None;
        }
    }
    let scheme_var = if url.scheme() == "https" {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    env(scheme_var).or_else(|| env("ALL_PROXY"))
}

/// Every error of `error`'s source chain, an `io::Error`'s inner error included (its `source()` skips it).
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        out.push(e);
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

/// Classifies a failed request from its error chain.
pub fn cause(error: &reqwest::Error) -> Cause {
    let chain = chain(error);
    let innermost = chain.last().map(|e| e.to_string()).unwrap_or_default();
    for e in &chain {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(cert) => Cause::Tls {
                    detail: describe_certificate_error(cert),
                    untrusted: matches!(
                        cert,
                        rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
                    ),
                },
                other => Cause::Tls {
                    detail: other.to_string(),
                    untrusted: false,
                },
            };
        }
    }
    if error.is_timeout()
        || chain.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        })
    {
        return Cause::Timeout;
    }
    let io_kind = chain
        .iter()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .next();
    let texts: Vec<String> = chain.iter().map(|e| e.to_string()).collect();
    let any = |needle: &str| texts.iter().any(|t| t.to_ascii_lowercase().contains(needle));
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        return Cause::Refused;
    }
    if any("dns error") || any("failed to lookup address") {
        return Cause::Dns(innermost);
    }
    if any("tunnel") {
        return Cause::Tunnel(innermost);
    }
    if matches!(
        io_kind,
        Some(
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        )
    ) || any("connection closed")
    {
        return Cause::Closed(innermost);
    }
    Cause::Other(texts.join(": "))
}

fn describe_certificate_error(cert: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match cert {
        C::UnknownIssuer => "issued by a CA this machine does not trust".into(),
        C::BadSignature => "its signature does not verify".into(),
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet (check the clock)".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "issued for another host name".into(),
        other => format!("{other}"),
    }
}

/// One sentence: what failed reaching `error`'s URL and what to do about it. `timeout` is the time the
/// request was given, for a timeout's message.
pub(crate) fn explain(error: &reqwest::Error, timeout: Duration) -> String {
    let url = error.url();
    let host = url.and_then(|u| u.host_str()).unwrap_or("the server").to_owned();
    let port = url.and_then(|u| u.port_or_known_default()).unwrap_or(443);
    let proxy = url.and_then(proxy_for);
    let cause = cause(error);
    if let Some((var, proxy)) = &proxy {
        let through = match &cause {
            Cause::Refused => Some(format!(
                "proxy {proxy} (from {var}) refused the connection: nothing listens there; fix {var}, or add \
                 {host} to NO_PROXY if it should be reached directly"
            )),
            Cause::Dns(detail) => Some(format!(
                "proxy {proxy} (from {var}): DNS lookup failed ({detail}): check the proxy's host name in {var}"
            )),
            Cause::Tunnel(detail) => Some(format!(
                "proxy {proxy} (from {var}) would not tunnel to {host}:{port} ({detail}): check the proxy allows \
                 it, or add {host} to NO_PROXY"
            )),
            _ => None,
        };
        if let Some(message) = through {
            return message;
        }
    }
    let via = proxy
        .as_ref()
        .map(|(var, p)| format!(" (through proxy {p} from {var})"))
        .unwrap_or_default();
    match cause {
        Cause::Dns(detail) => format!(
            "DNS lookup of {host} failed ({detail}): check the host name in the URL and this machine's DNS \
             (/etc/resolv.conf)"
        ),
        Cause::Refused => format!(
            "connection to {host}:{port} refused{via}: nothing listens there; check the URL and its port (and \
             any firewall)"
        ),
        Cause::Tls {
            detail,
            untrusted: true,
        } => format!(
            "TLS: the certificate of {host} is not trusted ({detail}){via}: if a proxy or firewall re-signs TLS, \
             or the endpoint uses a private CA, put that CA (PEM) in azure.ca_file or SSL_CERT_FILE"
        ),
        Cause::Tls { detail, .. } => format!(
            "TLS handshake with {host}:{port} failed ({detail}){via}: check the URL names the endpoint's own \
             host and that this machine's clock is right"
        ),
        Cause::Timeout => format!(
            "no answer from {host}:{port} within {}{via}: the network path drops packets or the endpoint is \
             overloaded; check firewalls and routes to it",
            seconds(timeout)
        ),
        Cause::Closed(detail) => format!(
            "{host}:{port} closed the connection without answering ({detail}){via}: check the URL's port speaks \
             HTTPS and no firewall cuts the connection"
        ),
        Cause::Tunnel(detail) => format!("proxy tunnel to {host}:{port} failed ({detail}){via}"),
        Cause::Other(detail) => format!("cannot reach {host}:{port}{via}: {detail}"),
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request to `url` with `timeout`, through a client that honours the environment's proxies.
    async fn fail(url: &str, timeout: Duration) -> reqwest::Error {
        crate::azure::http_client(None)
            .unwrap()
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .expect_err("the request fails")
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_a_dns_failure() {
        let e = fail("https://no-such-vault.invalid/keys", Duration::from_secs(5)).await;
        assert!(matches!(cause(&e), Cause::Dns(_)), "{:?}", cause(&e));
        let m = explain(&e, Duration::from_secs(5));
        assert!(m.starts_with("DNS lookup of no-such-vault.invalid failed"), "{m}");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = fail(&format!("https://127.0.0.1:{port}/"), Duration::from_secs(5)).await;
        assert_eq!(cause(&e), Cause::Refused);
        assert!(explain(&e, Duration::from_secs(5))
            .starts_with(&format!("connection to 127.0.0.1:{port} refused")));
    }

    #[tokio::test]
    async fn a_silent_listener_times_out_after_the_given_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let e = fail(&format!("https://{addr}/"), Duration::from_millis(300)).await;
        assert_eq!(cause(&e), Cause::Timeout);
        let m = explain(&e, Duration::from_millis(300));
        assert!(
            m.starts_with(&format!("no answer from {addr} within 0.3s")),
            "{m}"
        );
        held.abort();
    }
}
