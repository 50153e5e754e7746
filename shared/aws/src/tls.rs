//! The platform's trust roots, read once per process for every HTTPS client Riffle makes
//! (the SDK's and the registry client's), and not at all when every endpoint is plain HTTP.
//!
//! Left to themselves the SDK's client and reqwest's platform verifier each read the system
//! store: on Debian that is a 220 KB bundle and then every one of ~290 files in
//! `/etc/ssl/certs`, twice, during a function's cold start. Reading it once here and handing
//! the same roots to both clients halves that on AWS; the local twin, whose endpoints are
//! all `http://127.0.0.1`, needs no roots and reads none.

use std::sync::LazyLock;

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use base64::Engine as _;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// The SDK's endpoint variable; the per-service ones carry a suffix (`..._KINESIS`).
const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL";

/// The platform's roots that a TLS client can use (what does not parse as a trust anchor
/// is left out and counted in a warning, as the SDK and reqwest do).
static ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.errors.is_empty() {
        tracing::warn!(errors = ?loaded.errors, "some platform trust roots could not be read");
    }
    let mut probe = RootCertStore::empty();
    let mut unusable = 0_usize;
    let roots: Vec<_> = loaded
        .certs
        .into_iter()
        .filter(|cert| {
            let usable = probe.add(cert.clone()).is_ok();
            unusable += usize::from(!usable);
            usable
        })
        .collect();
    if unusable > 0 {
        tracing::warn!(unusable, "platform trust roots left out: not trust anchors");
    }
    if roots.is_empty() {
        tracing::warn!("no platform trust roots: HTTPS calls will fail verification");
    }
    roots
});

/// [`ROOTS`] as PEM, the only form the SDK's trust store takes.
static ROOTS_PEM: LazyLock<Vec<u8>> = LazyLock::new(|| pem(&ROOTS));

/// The platform's trust roots, read on first use and kept for the life of the process.
pub fn roots() -> &'static [CertificateDer<'static>] {
    &ROOTS
}

/// Whether the environment points every AWS endpoint at plain HTTP (the local twin):
/// `AWS_ENDPOINT_URL` is set to an `http://` URL and no per-service endpoint is `https://`.
/// Without `AWS_ENDPOINT_URL` the SDK resolves AWS's own HTTPS endpoints.
pub fn plain_http_endpoints() -> bool {
    plain_http_in(std::env::vars())
}

fn plain_http_in(vars: impl Iterator<Item = (String, String)>) -> bool {
    let mut general = false;
    for (name, value) in vars {
        let Some(suffix) = name.strip_prefix(ENDPOINT_ENV) else {
            continue;
        };
        if !(suffix.is_empty() || suffix.starts_with('_')) {
            continue;
        }
        if !value.trim().to_ascii_lowercase().starts_with("http://") {
            return false;
        }
        general |= suffix.is_empty();
    }
    general
}

/// The SDK's HTTPS client as the SDK builds its default one (rustls with aws-lc, proxies from
/// the environment), trusting [`roots`], or nothing when [`plain_http_endpoints`].
pub fn sdk_http_client() -> SharedHttpClient {
    let plain = plain_http_endpoints();
    Builder::new().build_with_connector_fn(move |settings, components| {
        // Called when the SDK first needs a connection with these settings, so the roots are
        // read on the first call, not when the client is configured.
        let store = if plain {
            TrustStore::empty()
        } else {
            TrustStore::empty().with_pem_certificate(ROOTS_PEM.as_slice())
        };
        let context = TlsContext::builder().with_trust_store(store).build();
        let mut builder =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        if let Ok(context) = context {
            builder = builder.tls_context(context);
        }
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.build()
    })
}

/// Certificates as one PEM bundle.
fn pem(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for cert in certs {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let encoded = engine.encode(cert.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn only_an_all_plain_environment_skips_the_roots() {
        assert!(!plain_http_in(vars(&[])), "AWS itself is HTTPS");
        assert!(plain_http_in(vars(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_KINESIS", "HTTP://127.0.0.1:4567"),
            ("AWS_ENDPOINT_URLS_NOTE", "https://not.an.endpoint.variable"),
        ])));
        assert!(!plain_http_in(vars(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_S3", "https://s3.example"),
        ])));
        assert!(
            !plain_http_in(vars(&[("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:1")])),
            "the other services still resolve AWS's endpoints"
        );
        assert!(!plain_http_in(vars(&[(
            "AWS_ENDPOINT_URL",
            "https://localhost:4566"
        )])));
    }

    #[test]
    fn the_platform_roots_are_read_and_travel_as_pem() {
        // The build machines carry Debian's ca-certificates, as Lambda's images carry theirs.
        assert!(roots().len() > 10, "{} roots", roots().len());
        let back: Vec<_> = CertificateDer::pem_slice_iter(&ROOTS_PEM)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.as_slice(), roots());
    }

    #[test]
    fn the_pem_reads_back_as_the_same_certificates() {
        // Certificates are opaque DER here: any bytes round-trip, line breaks included.
        let certs: Vec<CertificateDer<'static>> = [vec![0x30, 0x03, 1, 2, 3], vec![7_u8; 200]]
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let text = pem(&certs);
        assert!(text.split(|b| *b == b'\n').all(|line| line.len() <= 64));
        let back: Vec<_> = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, certs);
    }
}
