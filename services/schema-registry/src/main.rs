//! The `schema-registry` binary: builds the DynamoDB store once and serves the router,
//! under Lambda when `AWS_LAMBDA_RUNTIME_API` is set, else on a local socket.

use riffle_schema_registry::{CompatibilityLevel, Config, DynamoStore, Registry, router_with_auth};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Logs go to stderr: stdout carries the LISTENING line and the EMF metric lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.table.clone());
    // The API's default level (BACKWARD) until `PUT /config` stores another.
    let registry = Registry::with_default_level(store, CompatibilityLevel::default());
    let app = router_with_auth(registry, config.auth);
    config.serving.run(app).await
}
