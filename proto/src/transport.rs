//! How the CLI, workers and tests dial a controller: `http://` in the clear (loopback only, or
//! with an `--insecure` controller), `https://` with TLS (rustls) checked against `--ca-cert` or
//! the system's roots, and a client certificate when the controller asks for one. Also: turning
//! a failed connection into a sentence that says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Makes aws-lc the process's TLS provider (rustls needs one chosen when more than one is built
/// in). Call before any TLS is used; calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// TLS settings of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA(s) that signed the controller's certificate; `None`: the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for controllers started with
    /// `--tls-client-ca`.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the controller's certificate against, when it is not the URL's host.
    pub domain: Option<String>,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the {what} {}: {e}", path.display()))
}

impl ClientTls {
    /// The rustls settings of this client (certificates read now, so a missing file is named).
    fn config(&self) -> Result<ClientTlsConfig, String> {
        let mut tls = ClientTlsConfig::new();
        match &self.ca_cert {
            Some(ca) => {
                let pem = read("CA certificate", ca)?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!("{} holds no PEM certificate", ca.display()));
                }
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            None => tls = tls.with_native_roots(),
        }
        if let Some((cert, key)) = &self.client_identity {
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        Ok(tls)
    }
}

/// An endpoint for `url`: TLS for `https://`, plain for `http://`.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, String> {
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok {
        return Err(format!(
            "invalid controller URL {url:?}: expected http://HOST:PORT or https://HOST:PORT"
        ));
    }
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid controller URL {url:?}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(10)));
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.config()?)
            .map_err(|e| format!("TLS settings for {url}: {e}"))?;
    }
    Ok(endpoint)
}

/// Every message of an error's source chain, joined.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// A call that failed below gRPC (the connection: TLS, HTTP/2), said in words that say what to
/// change; `None` for an answer of the controller itself. Such a failure is reported as
/// `UNAVAILABLE` (the CLI's exit 5).
pub fn transport_failure(url: &str, status: &tonic::Status) -> Option<tonic::Status> {
    use std::error::Error;
    let source = status.source()?;
    let chain = format!("{}: {}", status.message(), error_chain(source));
    Some(tonic::Status::unavailable(explain_connect_error(
        url, &chain,
    )))
}

/// True when an explanation names something to change (a certificate, the scheme): retrying
/// the same call cannot help.
pub fn is_configuration_error(explained: &str) -> bool {
    explained.ends_with(')')
        && explained.contains(" (")
        && [
            "--ca-cert",
            "https://",
            "http://",
            "--client-cert",
            "issued for",
        ]
        .iter()
        .any(|h| explained.contains(h))
}

/// Why a connection to `url` failed, in words that say what to change.
pub fn explain_connect_error(url: &str, chain: &str) -> String {
    let lower = chain.to_ascii_lowercase();
    let hint = if lower.contains("certificate required")
        || lower.contains("certificaterequired")
        || lower.contains("handshake failure")
        || lower.contains("handshakefailure")
    {
        " (the controller asks for a client certificate: give --client-cert and --client-key)"
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("certificate")
    {
        if lower.contains("notvalidforname") || lower.contains("not valid for name") {
            " (the controller's certificate does not name this host: dial the name it was issued for)"
        } else {
            " (the controller's certificate is not signed by a CA this client trusts: give the CA with --ca-cert or FERRY_CA_CERT)"
        }
    } else if url.starts_with("http://")
        && (lower.contains("h2 protocol error")
            || lower.contains("frame")
            || lower.contains("connection reset")
            || lower.contains("broken pipe")
            || lower.contains("connection closed")
            || lower.contains("unexpected end of file")
            || lower.contains("http2 error"))
    {
        " (the controller did not speak plain gRPC: if it uses TLS, dial it with https://)"
    } else if url.starts_with("https://")
        && (lower.contains("invalidcontenttype")
            || lower.contains("wrong version number")
            || lower.contains("corrupt message")
            || lower.contains("invalid content type"))
    {
        " (the controller does not speak TLS: dial it with http://, or start it with --tls-cert and --tls-key)"
    } else {
        ""
    };
    format!("{chain}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme() {
        assert!(endpoint("127.0.0.1:7420", &ClientTls::default()).is_err());
        assert!(endpoint("http://127.0.0.1:7420", &ClientTls::default()).is_ok());
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = ClientTls {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = endpoint("https://127.0.0.1:7420", &tls).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn explanations_say_what_to_change() {
        let e = explain_connect_error(
            "https://x:1",
            "transport error: invalid peer certificate: UnknownIssuer",
        );
        assert!(e.contains("--ca-cert"), "{e}");
        let e = explain_connect_error("http://x:1", "transport error: h2 protocol error: frame");
        assert!(e.contains("https://"), "{e}");
        let e = explain_connect_error("https://x:1", "received fatal alert: CertificateRequired");
        assert!(e.contains("--client-cert"), "{e}");
        assert!(is_configuration_error(&e));
        assert!(!is_configuration_error("connection refused"));
    }
}
