//! SigV4 signing for [`crate::Credentials::Iam`]: on AWS the registry is a Lambda function
//! URL with AuthType `AWS_IAM`, which refuses any request not signed for the `lambda` service.
//! The signature covers the finished request (method, URL with query, the headers sent and a
//! hash of the body), so it is computed after the request is built, just before it is sent.

use std::time::SystemTime;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue};

use crate::ClientError;

/// The signing name of a Lambda function URL.
pub const SIGV4_SERVICE: &str = "lambda";

/// The SDK's default chain: environment, profile, web identity, container and instance
/// credentials, and `AWS_REGION`; the chain a Lambda function's role reaches it through.
pub(crate) async fn default_sdk_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// Signs `request` for a Lambda function URL with AuthType `AWS_IAM` (any of Riffle's, not
/// only the registry's: the view query API too), with the SDK's default credentials and
/// region.
///
/// # Errors
/// No region or credentials, or a request that cannot be signed (a streamed body).
pub async fn sign_for_function_url(request: &mut reqwest::Request) -> Result<(), ClientError> {
    sign_with(&default_sdk_config().await, request).await
}

/// Signs `request` with the credentials, region and clock of `sdk`.
pub(crate) async fn sign_with(
    sdk: &SdkConfig,
    request: &mut reqwest::Request,
) -> Result<(), ClientError> {
    let region = sdk.region().ok_or_else(|| {
        ClientError::Config("SigV4 signing needs an AWS region; set AWS_REGION".into())
    })?;
    let provider = sdk.credentials_provider().ok_or_else(|| {
        ClientError::Config("SigV4 signing needs AWS credentials; none are configured".into())
    })?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(credentials_error)?;
    let now = sdk.time_source().map_or_else(SystemTime::now, |t| t.now());
    sign_request(request, &credentials, region.as_ref(), now)
}

/// Adds `authorization`, `x-amz-date`, `x-amz-content-sha256` and, for temporary
/// credentials, `x-amz-security-token` to `request`, signed at `time`.
pub(crate) fn sign_request(
    request: &mut reqwest::Request,
    credentials: &aws_credential_types::Credentials,
    region: &str,
    time: SystemTime,
) -> Result<(), ClientError> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    // A function URL hashes a POST body itself, but sending the hash makes the signed
    // request self-describing and costs nothing for the small bodies the registry takes.
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGV4_SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| ClientError::Config(format!("SigV4 parameters: {e}")))?
        .into();
    let body = match request.body() {
        None => SignableBody::Bytes(&[]),
        Some(body) => SignableBody::Bytes(body.as_bytes().ok_or_else(|| {
            ClientError::Config("SigV4 cannot sign a streamed request body".into())
        })?),
    };
    // Only headers with text values can be signed; the client sends no others.
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        body,
    )
    .map_err(|e| ClientError::Config(format!("SigV4 cannot sign this request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| ClientError::Config(format!("SigV4 signing: {e}")))?
        .into_parts();
    let (signed_headers, _query) = instructions.into_parts();
    for header in signed_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())
            .map_err(|e| ClientError::Config(format!("SigV4 header {}: {e}", header.name())))?;
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|e| ClientError::Config(format!("SigV4 header {}: {e}", header.name())))?;
        // The signature is a credential for as long as it is valid: keep it out of logs too.
        value.set_sensitive(header.sensitive() || name == reqwest::header::AUTHORIZATION);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// Missing or misconfigured credentials stay missing; a credential endpoint that timed out
/// or failed (instance metadata, STS) may answer next time.
fn credentials_error(e: CredentialsError) -> ClientError {
    let message = format!("AWS credentials for SigV4: {e}");
    match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            ClientError::Config(message)
        }
        _ => ClientError::Transport(message),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    // 2026-11-28T12:00:00Z.
    const AT: u64 = 1_795_867_200;

    fn request(method: reqwest::Method, url: &str, body: Option<&'static str>) -> reqwest::Request {
        let mut r = reqwest::Request::new(method, reqwest::Url::parse(url).unwrap());
        r.headers_mut().insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(crate::CONTENT_TYPE_V1),
        );
        if let Some(body) = body {
            *r.body_mut() = Some(body.into());
        }
        r
    }

    fn header<'a>(r: &'a reqwest::Request, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn creds(token: Option<&str>) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    #[test]
    fn signs_for_lambda_in_the_region_with_the_body_hash() {
        let mut r = request(
            reqwest::Method::POST,
            "https://abc.lambda-url.eu-west-1.on.aws/subjects/a%2Fb/versions?normalize=true",
            Some(r#"{"schema":"\"long\""}"#),
        );
        let time = UNIX_EPOCH + Duration::from_secs(AT);
        sign_request(&mut r, &creds(None), "eu-west-1", time).unwrap();

        let auth = header(&r, "authorization");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/eu-west-1/lambda/aws4_request, "
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=accept;host;x-amz-content-sha256;x-amz-date, Signature="),
            "{auth}"
        );
        assert_eq!(header(&r, "x-amz-date"), "20261128T120000Z");
        // sha256 of the body, so a body changed in flight fails the check.
        assert_eq!(
            header(&r, "x-amz-content-sha256"),
            "265bf51be0445dd41b793129e7290019aac0e7d9418f76be277cb2d35c2f1ee6"
        );
        assert!(r.headers().get("x-amz-security-token").is_none());

        // Deterministic: the same request, credentials and time sign the same.
        let mut again = request(
            reqwest::Method::POST,
            "https://abc.lambda-url.eu-west-1.on.aws/subjects/a%2Fb/versions?normalize=true",
            Some(r#"{"schema":"\"long\""}"#),
        );
        sign_request(&mut again, &creds(None), "eu-west-1", time).unwrap();
        assert_eq!(header(&again, "authorization"), auth);
        // Another body, another signature.
        let mut other = request(
            reqwest::Method::POST,
            "https://abc.lambda-url.eu-west-1.on.aws/subjects/a%2Fb/versions?normalize=true",
            Some(r#"{"schema":"\"int\""}"#),
        );
        sign_request(&mut other, &creds(None), "eu-west-1", time).unwrap();
        assert_ne!(header(&other, "authorization"), auth);
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let mut r = request(
            reqwest::Method::GET,
            "https://abc.lambda-url.us-east-1.on.aws/schemas/ids/7",
            None,
        );
        let time = UNIX_EPOCH + Duration::from_secs(AT);
        sign_request(
            &mut r,
            &creds(Some("FQoGZXIvYXdzEXAMPLE")),
            "us-east-1",
            time,
        )
        .unwrap();
        assert_eq!(header(&r, "x-amz-security-token"), "FQoGZXIvYXdzEXAMPLE");
        let auth = header(&r, "authorization");
        assert!(
            auth.contains("/20261128/us-east-1/lambda/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=accept;host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        // The hash of an empty body.
        assert_eq!(
            header(&r, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(r.headers()["x-amz-security-token"].is_sensitive());
        assert!(r.headers()["authorization"].is_sensitive());
    }
}
