//! `riffle dlq list | show | redrive`: the deployment's dead-letter queues from a terminal.
//!
//! Which queues exist, which stage writes each, and which stream feeds each stage come from
//! the templates ([`topology`], pure, over `riffle_plan::plan`): the stages' on-failure
//! destinations and `RIFFLE_DLQ_URL` / `RIFFLE_REJECTS_QUEUE_URL` variables, and their event
//! source mappings. Queue URLs are then looked up by name (GetQueueUrl), so the same command
//! works against AWS and the local twin (endpoints from the standard AWS variables).
//!
//! Two message shapes travel on these queues (docs/CONTRACTS.md, "Queue messages"):
//! `RejectMessage`s (alone or as a `RejectBatch`) and the event source mapping's on-failure
//! messages (`riffle_aws::on_failure`, positions only, as Lambda sends them). [`parse_message`]
//! reads both; [`stream_ranges`] + [`read_ranges`] take back from the streams the records a
//! message names by position only (all of an on-failure message's; rejects too big for SQS).
//!
//! Redrive puts the records a message stands for back on the input stream of the stage that
//! gave up on them, with their original partition keys, and deletes the message only after
//! every one of its records was put: at least once. A crash between the put and the delete
//! puts the records again on the next redrive. Every record put back gets a new origin
//! addressed to the stage that gave up (`riffle_stage::dedup::redrive_origin`, ADR 0010): its
//! old origin is below that stage's marks and would be dropped as a copy, and the other
//! readers of the stream (the aggregator and the archiver share `enriched`) must leave it
//! alone. KPL aggregates are put back as their user records, each re-encoded with the new
//! origin; a record that does not decode goes back as it was (it is parked again).

mod message;
mod plan;
mod queue;
mod render;
mod topology;

pub use message::*;
pub use plan::*;
pub use queue::*;
pub use render::*;
pub use topology::*;

use crate::OpsError;
use clap::{Args, Subcommand};
pub use riffle_aws::limits::SQS_BATCH_MAX_ENTRIES as SQS_BATCH_MAX;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `riffle dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// The templates folder (default: infra/ of this checkout).
    #[arg(long, global = true)]
    pub infra: Option<PathBuf>,
    /// The environment whose queues and streams to use (`riffle deploy --env`): their names
    /// carry it (`riffle-<env>-enricher-dlq`). The local twin's is `local`.
    #[arg(long, global = true, default_value = riffle_plan::LOCAL_ENV)]
    pub env: String,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum DlqCommand {
    /// Every dead-letter and rejects queue, who writes it, and its approximate message count.
    List,
    /// Print messages readably without consuming them.
    Show {
        /// Queue name (riffle-local-enricher-dlq), template logical id (EnricherDlq) or URL.
        queue: String,
        /// Most messages to print.
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
    /// Put the records of messages back on their stage's input stream, then delete them.
    Redrive {
        /// Queue name, template logical id or URL.
        queue: String,
        /// Most messages to redrive.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Report what would be put; put and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `riffle dlq ...`.
pub async fn main(args: DlqArgs) -> ExitCode {
    crate::report(run_command(args).await)
}

async fn run_command(args: DlqArgs) -> Result<String, OpsError> {
    let infra = match args.infra {
        Some(dir) => dir,
        None => riffle_plan::project_root()?.join("infra"),
    };
    let env = crate::deploy::EnvName::parse(&args.env)?;
    let topology = topology(&riffle_plan::plan(&infra, env.as_str())?);
    let sdk = riffle_aws::sdk_config().await;
    let sqs = riffle_aws::sqs_client(&sdk);
    match args.command {
        DlqCommand::List => {
            let depths = list(&sqs, &topology).await?;
            let failed = depths.iter().filter(|d| d.error.is_some()).count();
            if failed > 0 {
                eprint!("{}", render_list(&depths));
                return Err(OpsError::Aws(format!(
                    "{failed} of {} queues could not be read",
                    depths.len()
                )));
            }
            Ok(render_list(&depths))
        }
        DlqCommand::Show { queue, max } => {
            let url = resolve_queue(&sqs, &topology, &queue).await?;
            let messages = show(&sqs, &url, max).await?;
            let kinesis = riffle_aws::kinesis_client(&sdk);
            let mut out = format!(
                "{} messages read from {url} (left on the queue)\n",
                messages.len()
            );
            for m in &messages {
                let read = read_ranges(&kinesis, &stream_ranges(&m.message, &topology)).await;
                out.push_str(&render_message(m, &read));
            }
            Ok(out)
        }
        DlqCommand::Redrive {
            queue,
            max,
            dry_run,
        } => {
            let url = resolve_queue(&sqs, &topology, &queue).await?;
            let r = redrive(&sdk, &topology, &url, max, dry_run, |l| eprintln!("{l}")).await?;
            let verb = if dry_run { "would redrive" } else { "redrove" };
            let mut out = format!(
                "{verb} {} of {} messages: {:?} records per stream; {} left on the queue\n",
                r.redriven,
                r.messages,
                r.records,
                r.skipped.len()
            );
            for (id, reason) in &r.skipped {
                let _ = writeln!(out, "  kept {id}: {reason}");
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use riffle_aws::OutRecord;
    use riffle_stage::RejectMessage;
    use std::collections::BTreeMap;

    fn infra() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra")
    }

    #[test]
    fn the_templates_name_every_queue_and_who_writes_it() {
        let t = topology(&riffle_plan::plan(&infra(), riffle_plan::LOCAL_ENV).unwrap());
        let by_name: BTreeMap<&str, Vec<&str>> = t
            .queues
            .iter()
            .map(|q| {
                (
                    q.name.as_str(),
                    q.stages.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(by_name["riffle-local-rejects"], vec!["validator"]);
        assert_eq!(by_name["riffle-local-validator-dlq"], vec!["validator"]);
        assert_eq!(by_name["riffle-local-enricher-dlq"], vec!["enricher"]);
        assert_eq!(by_name["riffle-local-aggregator-dlq"], vec!["aggregator"]);
        assert_eq!(by_name["riffle-local-archiver-dlq"], vec!["archiver"]);
        assert_eq!(t.stage_streams["validator"], "riffle-local-raw");
        assert_eq!(t.stage_streams["enricher"], "riffle-local-validated");
        assert_eq!(t.stage_streams["archiver"], "riffle-local-enriched");
        assert_eq!(
            t.stage_of_stream("riffle-local-validated"),
            Some("enricher")
        );
        let outputs: Vec<(&str, &str)> = t
            .stage_outputs
            .iter()
            .map(|(stage, stream)| (stage.as_str(), stream.as_str()))
            .collect();
        assert_eq!(
            outputs,
            [
                ("enricher", "riffle-local-enriched"),
                ("validator", "riffle-local-validated")
            ]
        );
        assert_eq!(
            t.queue("EnricherDlq").unwrap().name,
            "riffle-local-enricher-dlq"
        );
    }

    #[test]
    fn another_environment_names_its_own_queues_and_streams() {
        let t = topology(&riffle_plan::plan(&infra(), "prod-eu1").unwrap());
        assert_eq!(
            t.queue("EnricherDlq").unwrap().name,
            "riffle-prod-eu1-enricher-dlq"
        );
        assert_eq!(t.queue("EnricherDlq").unwrap().stages, vec!["enricher"]);
        assert_eq!(t.stage_streams["enricher"], "riffle-prod-eu1-validated");
        assert_eq!(t.stage_outputs["validator"], "riffle-prod-eu1-validated");
    }

    #[test]
    fn both_message_shapes_are_read_and_planned() {
        let t = topology(&riffle_plan::plan(&infra(), riffle_plan::LOCAL_ENV).unwrap());
        let mut record = riffle_stage::KinesisEventRecord::default();
        record.kinesis.data = vec![9, 9];
        record.kinesis.partition_key = "pk".into();
        record.kinesis.sequence_number = "5".into();
        record.source = riffle_stage::Source::of_shard("shardId-000000000002");
        let reject = RejectMessage::new("aggregator", &record, "no_enrichment", "x".into());
        let body = serde_json::to_string(&reject).unwrap();
        let message = parse_message(&body);
        assert!(
            stream_ranges(&message, &t).is_empty(),
            "the bytes are in the message"
        );
        // Bytes that do not decode go back as they were.
        let plan = redrive_plan(&message, "m-1", &t, &[]).unwrap();
        assert_eq!(
            plan.puts["riffle-local-enriched"],
            vec![OutRecord {
                partition_key: "pk".into(),
                data: vec![9, 9]
            }]
        );
        // Bytes too big for SQS: read from the stage's input stream at the record's place.
        let mut empty = reject.clone();
        empty.data_base64.clear();
        let empty = parse_message(&serde_json::to_string(&empty).unwrap());
        assert_eq!(
            stream_ranges(&empty, &t),
            vec![StreamRange {
                stream: "riffle-local-enriched".into(),
                shard: "shardId-000000000002".into(),
                start: "5".into(),
                end: "5".into(),
            }]
        );
        assert!(redrive_plan(&empty, "m-2", &t, &[]).is_err());
        let read = vec![vec![("pk".to_owned(), vec![7u8])]];
        assert_eq!(
            redrive_plan(&empty, "m-2", &t, &read).unwrap().puts["riffle-local-enriched"][0].data,
            vec![7]
        );

        // Lambda's message names positions only; the records come from the stream.
        let failure = r#"{
            "requestContext": {"requestId": "r", "functionArn": "f",
                "condition": "RecordAgeExceeded", "approximateInvokeCount": 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0", "timestamp": "2026-01-01T00:00:00.000Z",
            "KinesisBatchInfo": {"shardId": "shardId-1", "startSequenceNumber": "1",
                "endSequenceNumber": "2", "batchSize": 2,
                "streamArn": "arn:aws:kinesis:us-east-1:1:stream/riffle-local-validated"}}"#;
        let message = parse_message(failure);
        let DeadLetter::Failure(f) = &message else {
            panic!("not read as a failure");
        };
        assert_eq!(f.kinesis_batch_info.stream_name(), "riffle-local-validated");
        assert_eq!(
            stream_ranges(&message, &t),
            vec![StreamRange {
                stream: "riffle-local-validated".into(),
                shard: "shardId-1".into(),
                start: "1".into(),
                end: "2".into(),
            }]
        );
        let one = vec![vec![("a".to_owned(), vec![1u8])]];
        let short = redrive_plan(&message, "m-3", &t, &one).unwrap_err();
        assert!(short.contains("1 records read"), "{short}");
        let two = vec![vec![
            ("a".to_owned(), vec![1u8]),
            ("b".to_owned(), vec![2u8]),
        ]];
        let plan = redrive_plan(&message, "m-3", &t, &two).unwrap();
        assert_eq!(plan.puts["riffle-local-validated"].len(), 2);
        assert!(matches!(parse_message("{}"), DeadLetter::Unreadable(_)));
        assert!(matches!(parse_message("nope"), DeadLetter::Unreadable(_)));
    }

    #[test]
    fn records_summarize_without_panicking() {
        assert!(
            summarize_record(&[])
                .first()
                .unwrap()
                .starts_with("undecodable")
        );
        assert!(
            summarize_record(&[0, 0, 0, 0, 7, 1, 2])
                .first()
                .unwrap()
                .starts_with("undecodable")
        );
    }
}
