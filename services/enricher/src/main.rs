//! The enricher function: builds its clients once and hands the handler to the runtime
//! (Lambda on AWS, the local event source mapping elsewhere).

// The SDK's nested futures exceed the default query depth.
#![recursion_limit = "256"]

use std::error::Error;

use riffle_aws::{KinesisPublisher, PublishConfig, SqsSender};
use riffle_codec::SchemaCache;
use riffle_enricher::reference::{DynamoReference, ReferenceCache};
use riffle_enricher::{Config, Enricher, STAGE};
use riffle_registry_client::{RegistryClient, STARTUP_PATIENCE};
use riffle_stage::marks::{DEFAULT_MARK_WINDOW, DynamoMarks, Marks};
use riffle_stage::{AggregatingOutput, SqsRejects};

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // One thread under Lambda, worker threads elsewhere (riffle_runtime::block_on).
    riffle_runtime::block_on(run())
}

async fn run() -> Result<(), Box<dyn Error + Send + Sync>> {
    riffle_telemetry::init(STAGE);
    let config = Config::from_env()?;
    let sdk = riffle_aws::sdk_config().await;
    // Credentials as the environment names them (SigV4 on AWS, where the function URL
    // requires IAM), signed with the same credentials and region as every other AWS call.
    let registry =
        RegistryClient::from_env_credentials(&config.registry_url)?.with_sdk_config(sdk.clone());
    let envelopes = registry.envelope_codec(STARTUP_PATIENCE).await?;
    let reference = ReferenceCache::new(
        DynamoReference::new(riffle_aws::dynamodb_client(&sdk), &config.reference_table),
        config.reference_ttl,
    );
    // Aggregated per shard: one Kinesis record carries many events to the next stage.
    let kinesis = riffle_aws::kinesis_client(&sdk);
    let output = AggregatingOutput::new(
        kinesis.clone(),
        // Strict order: at most one aggregate per target shard in a request, so the origin
        // marks downstream never see a later record before an earlier one (ADR 0010).
        KinesisPublisher::new(
            kinesis,
            PublishConfig {
                strict_order: true,
                ..PublishConfig::default()
            },
        ),
        &config.output_stream,
    )
    .compressed(config.compress_aggregates);
    let dlq = SqsRejects::new(
        SqsSender::new(riffle_aws::sqs_client(&sdk)),
        &config.dlq_url,
    );
    let handler = Enricher::new(
        envelopes,
        SchemaCache::new(registry),
        reference,
        output,
        dlq,
        Marks::new(
            DynamoMarks::new(riffle_aws::dynamodb_client(&sdk), &config.marks_table),
            DEFAULT_MARK_WINDOW,
        ),
    )
    .with_tracer(riffle_stage::trace::Tracer::from_env("riffle-enricher"));
    riffle_runtime::run_kinesis(handler).await
}
