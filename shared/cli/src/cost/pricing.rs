//! A region's price table (`infra/pricing/<region>.json`): list prices with the date they
//! were taken, the only prices the cost model uses.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// List prices of one region, in USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// The region.
    pub region: String,
    /// When the prices were taken.
    pub as_of: String,
    /// Where from.
    pub source: String,
    /// Kinesis Data Streams.
    pub kinesis: Kinesis,
    /// Lambda (arm64).
    pub lambda: Lambda,
    /// DynamoDB on-demand.
    pub dynamodb: Dynamo,
    /// S3 and its lifecycle tiers.
    pub s3: S3,
    /// SQS standard queues.
    pub sqs: Sqs,
    /// CloudWatch Logs and metrics.
    pub cloudwatch: CloudWatch,
    /// X-Ray.
    pub xray: Xray,
    /// KMS.
    pub kms: Kms,
}

/// Kinesis Data Streams prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kinesis {
    /// Provisioned: per shard and hour.
    pub shard_hour: f64,
    /// Provisioned: per million PUT payload units (25 KiB each).
    pub put_units_per_million: f64,
    /// On-demand: per stream and hour.
    pub on_demand_stream_hour: f64,
    /// On-demand: per GB written.
    pub on_demand_ingest_per_gb: f64,
    /// On-demand: per GB read.
    pub on_demand_retrieve_per_gb: f64,
}

/// Lambda prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lambda {
    /// Per million invocations.
    pub requests_per_million: f64,
    /// Per GB-second on arm64.
    pub gb_second_arm64: f64,
}

/// DynamoDB on-demand prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dynamo {
    /// Per million write request units (an item up to 1 KB).
    pub write_units_per_million: f64,
    /// Per million read request units (a strongly consistent item up to 4 KB).
    pub read_units_per_million: f64,
}

/// S3 prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct S3 {
    /// Per thousand PUTs.
    pub puts_per_thousand: f64,
    /// Standard, per GB-month.
    pub standard_gb_month: f64,
    /// Standard-IA, per GB-month.
    pub standard_ia_gb_month: f64,
    /// Glacier Instant Retrieval, per GB-month.
    pub glacier_ir_gb_month: f64,
}

/// SQS prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sqs {
    /// Per million requests.
    pub requests_per_million: f64,
}

/// CloudWatch prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudWatch {
    /// Logs ingested, per GB.
    pub logs_ingest_per_gb: f64,
    /// Per custom metric and month.
    pub custom_metric_month: f64,
}

/// X-Ray prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Xray {
    /// Per million traces recorded.
    pub traces_recorded_per_million: f64,
}

/// KMS prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kms {
    /// Per customer managed key and month.
    pub key_month: f64,
}

impl Pricing {
    /// Reads a price table.
    ///
    /// # Errors
    /// The file is missing (no table for that region) or malformed.
    pub fn read(path: &Path) -> Result<Pricing, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "no price table {} ({e}); tables are under infra/pricing/",
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
