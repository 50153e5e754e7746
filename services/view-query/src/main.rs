//! The `view-query` binary: serves the view query API under Lambda (a function URL) when
//! `AWS_LAMBDA_RUNTIME_API` is set, else on a local socket.

use riffle_view_query::{Config, ViewReader, router};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Logs go to stderr: stdout carries the LISTENING line and the EMF metric lines.
    riffle_telemetry::init(riffle_view_query::SERVICE);
    let config = Config::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let mut reader = ViewReader::new(aws_sdk_dynamodb::Client::new(&sdk), config.table.clone());
    if let Some(claims) = &config.claims_table {
        reader = reader.with_watermark(claims.clone());
    }
    let app = router(reader, config.auth);
    config.serving.run(app).await
}
