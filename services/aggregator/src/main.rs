//! The `aggregator` function: builds its clients once, registers the envelope schema it
//! writes with (waiting for the registry while it starts), and hands the pure [`Aggregator`] to
//! `riffle_runtime` (Lambda on AWS, the local event source mapping elsewhere). All logic
//! lives in the library.

// The runtime's future nests the handler's (SDK calls inside spawned writes inside the
// local mapping's loop) deeper than the compiler's default layout query depth.
#![recursion_limit = "256"]

use riffle_aggregator::{Aggregator, Config, DynamoViewStore, handler::SERVICE};
use riffle_aws::SqsSender;
use riffle_codec::SchemaCache;
use riffle_registry_client::{RegistryClient, STARTUP_PATIENCE};
use riffle_stage::SqsRejects;
use riffle_stage::marks::{DynamoMarks, Marks};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    // One thread under Lambda, worker threads elsewhere (riffle_runtime::block_on).
    riffle_runtime::block_on(run())
}

async fn run() -> Result<(), BoxError> {
    riffle_telemetry::init(SERVICE);
    let config = Config::from_env()?;
    let sdk = riffle_aws::sdk_config().await;

    // Credentials as the environment names them (SigV4 on AWS, where the function URL
    // requires IAM), signed with the same credentials and region as every other AWS call.
    let registry =
        RegistryClient::from_env_credentials(&config.registry_url)?.with_sdk_config(sdk.clone());
    let codec = registry.envelope_codec(STARTUP_PATIENCE).await?;
    let envelope_id = codec.id();

    let dynamo = riffle_aws::dynamodb_client(&sdk);
    let store = DynamoViewStore::new(dynamo.clone(), &config.view_table, &config.claims_table);
    let marks = Marks::new(
        DynamoMarks::new(dynamo, &config.claims_table),
        config.dedup_window(),
    );
    let dead_letters = SqsRejects::new(
        SqsSender::new(riffle_aws::sqs_client(&sdk)),
        &config.dlq_url,
    );
    tracing::info!(envelope_id, table = %config.view_table, marks = %config.claims_table, "aggregator starting");
    let handler = Aggregator::new(
        codec,
        SchemaCache::new(registry),
        store,
        marks,
        dead_letters,
        // Every window comes from the contracts registered with the schemas (ADR 0020).
        std::collections::HashMap::new(),
        config.view_ttl_days,
    )
    .with_tracer(riffle_stage::trace::Tracer::from_env("riffle-aggregator"));
    riffle_runtime::run_kinesis(handler).await
}
