//! Feeding the pipeline and reading back what it did: producing, the view's items, the
//! archive's rows, the queues drained, waiting until every stage caught up.

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_archive::ArchivedRow;
use riffle_loadtest::GeneratedEvent;
use riffle_producer::{FailedRecord, Producer};
use riffle_stage::RejectMessage;
use riffle_stage::stages;
use riffle_telemetry::names;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

/// Receives and deletes everything on one queue.
#[derive(Debug, Clone)]
pub struct QueueDrainer {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl QueueDrainer {
    /// Takes every message off the queue, returning those that are reject messages.
    ///
    /// # Errors
    /// A failed Receive/Delete.
    pub async fn drain(&self) -> Result<Vec<RejectMessage>, PipelineError> {
        let mut messages = Vec::new();
        for body in self.drain_bodies().await? {
            match riffle_stage::reject::parse_body(&body) {
                Ok(rejects) => messages.extend(rejects),
                Err(e) => tracing::warn!(error = %e, queue = %self.url, "not a reject message"),
            }
        }
        Ok(messages)
    }

    /// Takes every message off the queue, returning their bodies whatever their shape
    /// (reject messages, the runtime's on-failure messages).
    ///
    /// # Errors
    /// A failed Receive/Delete.
    pub async fn drain_bodies(&self) -> Result<Vec<String>, PipelineError> {
        let mut bodies = Vec::new();
        let mut empty_polls = 0;
        // moto may answer an empty receive while messages are still in flight; two empty
        // polls in a row mean the queue is empty.
        while empty_polls < 2 {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(riffle_aws::limits::SQS_BATCH_MAX_ENTRIES as i32)
                .visibility_timeout(300)
                .send()
                .await
                .map_err(aws("ReceiveMessage"))?;
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                empty_polls += 1;
                continue;
            }
            empty_polls = 0;
            let mut deletes = Vec::with_capacity(batch.len());
            for (i, m) in batch.iter().enumerate() {
                if let Some(body) = m.body() {
                    bodies.push(body.to_string());
                }
                if let Some(handle) = m.receipt_handle() {
                    deletes.push(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                            .map_err(aws("DeleteMessageBatch entry"))?,
                    );
                }
            }
            self.client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(aws("DeleteMessageBatch"))?;
        }
        Ok(bodies)
    }
}

/// Whether every stage has taken in what the stage before emitted.
pub fn drained(c: &Counters, produced: u64) -> bool {
    let validated = c.count(stages::VALIDATOR, names::RECORDS_OUT);
    let enriched = c.count(stages::ENRICHER, names::RECORDS_OUT);
    c.count(stages::VALIDATOR, names::RECORDS_IN) >= produced
        && c.count(stages::VALIDATOR, names::RECORDS_OUT)
            + c.count(stages::VALIDATOR, names::REJECTED)
            >= produced
        && c.count(stages::ENRICHER, names::RECORDS_IN) >= validated
        && c.count(stages::AGGREGATOR, names::RECORDS_IN) >= enriched
        && c.count(stages::ARCHIVER, names::RECORDS_IN) >= enriched
}

/// The `Service` of the metric lines of the harness's producers.
pub const PRODUCER_SERVICE: &str = "producer";

impl Pipeline {
    /// The raw stream's name and the envelope codec producers put with.
    fn raw_target(&self) -> Result<(&str, riffle_codec::EnvelopeCodec), PipelineError> {
        let stream = self
            .deployment
            .stream_name("RawStream")
            .ok_or_else(|| PipelineError::Aws("no RawStream in the templates".into()))?;
        let codec = riffle_codec::EnvelopeCodec::new(self.schema_ids.envelope)
            .map_err(|e| PipelineError::Aws(e.to_string()))?;
        Ok((stream, codec))
    }

    /// The seeded generator of the demo and the load runs, over this twin's schema ids:
    /// events from `sources` (a mix such as `shop-web=2,web`), `invalid_ratio` of them
    /// invalid.
    ///
    /// # Errors
    /// The mix does not parse.
    pub fn generator(
        &self,
        seed: u64,
        sources: &str,
        invalid_ratio: f64,
    ) -> Result<riffle_loadtest::Generator, PipelineError> {
        let config = riffle_loadtest::GeneratorConfig {
            seed,
            sources: riffle_loadtest::parse_mix(sources)?,
            invalid_ratio,
            ..riffle_loadtest::GeneratorConfig::default()
        };
        Ok(riffle_loadtest::Generator::new(config, self.schema_ids())?)
    }

    /// A riffle producer on the raw stream: KPL aggregates per shard with origins stamped
    /// (ADR 0010) when `aggregate`, plain records without origins otherwise (as a producer
    /// that does not stamp them).
    ///
    /// # Errors
    /// The raw stream is not in the templates, or its shards cannot be listed.
    pub async fn producer(&self, aggregate: bool) -> Result<Producer, PipelineError> {
        let (stream, codec) = self.raw_target()?;
        let builder = Producer::builder(riffle_aws::kinesis_client(&self.sdk), stream, codec)
            .aggregation(aggregate)
            // Only the validator reads the raw stream, and it opens compressed aggregates.
            .compression(aggregate);
        let builder = if aggregate {
            builder.origins("riffle-dev")
        } else {
            builder
        };
        builder
            .build()
            .await
            .map_err(|e| PipelineError::Aws(format!("starting the producer: {e}")))
    }

    /// Puts `events` on the raw stream through a riffle producer, as a producer team would;
    /// returns the records it gave up on.
    ///
    /// # Errors
    /// The producer could not start, or stopped.
    pub async fn produce(
        &self,
        events: &[GeneratedEvent],
    ) -> Result<Vec<FailedRecord>, PipelineError> {
        let producer = self.producer(true).await?;
        self.produce_through(producer, events).await
    }

    /// [`Pipeline::produce`] through a Kinesis that throttles each entry with probability
    /// `rate` (unsent, as a shard over its write throughput answers): the producer's retries
    /// run, and its throttled entries reach the metrics store as Kinesis would count them.
    ///
    /// # Errors
    /// As [`Pipeline::produce`].
    pub async fn produce_throttled(
        &self,
        events: &[GeneratedEvent],
        rate: f64,
        seed: u64,
    ) -> Result<Vec<FailedRecord>, PipelineError> {
        let (stream, codec) = self.raw_target()?;
        let port = crate::chaos::port::ChaosPort::new(
            riffle_producer::KinesisPort::new(riffle_aws::kinesis_client(&self.sdk)),
            rate,
            0.0,
            seed,
            Arc::default(),
        );
        let producer = riffle_producer::ProducerBuilder::with_port(port, stream, codec)
            .aggregation(true)
            .compression(true)
            .origins("riffle-dev")
            .build()
            .await
            .map_err(|e| PipelineError::Aws(format!("starting the producer: {e}")))?;
        self.produce_through(producer, events).await
    }

    async fn produce_through(
        &self,
        producer: Producer,
        events: &[GeneratedEvent],
    ) -> Result<Vec<FailedRecord>, PipelineError> {
        let error = |e: riffle_producer::ProducerError| PipelineError::Aws(e.to_string());
        for e in events {
            producer
                .send_framed(e.partition_key.clone(), e.record.clone())
                .await
                .map_err(error)?;
        }
        let failed = producer.close().await.map_err(error)?;
        self.record_producer(&producer.stats());
        Ok(failed)
    }

    /// A producer's counts into the metrics store (service `producer`).
    pub fn record_producer(&self, stats: &riffle_producer::Stats) {
        let mut metrics = riffle_telemetry::Metrics::new(PRODUCER_SERVICE);
        metrics.count(names::KINESIS_RECORDS_PUT, stats.kinesis_records);
        metrics.count(names::KINESIS_WRITE_THROTTLED, stats.throttled);
        self.record_metrics(PRODUCER_SERVICE, &metrics);
    }

    /// Every item of the view table.
    ///
    /// # Errors
    /// A failed Scan.
    pub async fn view_items(&self) -> Result<Vec<HashMap<String, AttributeValue>>, PipelineError> {
        let table = self
            .deployment
            .table_name("ViewTable")
            .ok_or_else(|| PipelineError::Aws("no ViewTable in the templates".into()))?;
        let client = riffle_aws::dynamodb_client(&self.sdk);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws("Scan view"))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every archived row and the number of objects they came from.
    ///
    /// # Errors
    /// A failed List/Get or an object that is not readable Parquet.
    pub async fn archive_rows(&self) -> Result<(usize, Vec<ArchivedRow>), PipelineError> {
        let bucket = self
            .deployment
            .bucket_name("ArchiveBucket")
            .ok_or_else(|| PipelineError::Aws("no ArchiveBucket in the templates".into()))?;
        let client = riffle_aws::s3_client(&self.sdk);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(aws("ListObjectsV2"))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut rows = Vec::new();
        for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
            let object = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(aws("GetObject"))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(aws("reading object"))?
                .into_bytes();
            rows.extend(
                riffle_archive::read_rows(&bytes)
                    .map_err(|e| PipelineError::Archive(format!("{key}: {e}")))?,
            );
        }
        Ok((keys.len(), rows))
    }

    /// A handle that drains a queue (by template logical id or name); it can run in a task of
    /// its own while the pipeline works.
    ///
    /// # Errors
    /// When the templates have no such queue.
    pub fn queue_drainer(&self, queue: &str) -> Result<QueueDrainer, PipelineError> {
        let url = self
            .deployment
            .queue_url(queue)
            .ok_or_else(|| PipelineError::Aws(format!("no queue {queue} in the templates")))?;
        Ok(QueueDrainer {
            client: riffle_aws::sqs_client(&self.sdk),
            url: url.to_string(),
        })
    }

    /// Waits until every stage has taken in what the stage before it let through: the
    /// validator `produced` records, the others what the previous stage emitted. Gives up after
    /// `idle` without any progress.
    ///
    /// # Errors
    /// A stage process exited, or nothing moved for `idle`.
    pub async fn wait_drained(
        &mut self,
        produced: u64,
        idle: Duration,
        mut progress: impl FnMut(&Counters),
    ) -> Result<Counters, PipelineError> {
        let mut last = (0, Instant::now());
        loop {
            let c = self.counters();
            progress(&c);
            if drained(&c, produced) {
                return Ok(c);
            }
            if let Some((service, status)) = self.exited().into_iter().next() {
                return Err(PipelineError::Process {
                    reason: format!(
                        "exited ({status}); see {}",
                        self.log_file(&service).display()
                    ),
                    service,
                });
            }
            let moved = STAGES
                .iter()
                .map(|s| c.count(s, names::RECORDS_IN))
                .sum::<u64>();
            if moved != last.0 {
                last = (moved, Instant::now());
            } else if last.1.elapsed() > idle {
                return Err(PipelineError::Process {
                    service: "pipeline".into(),
                    reason: format!(
                        "no progress for {idle:?}; see the logs in {}",
                        self.options.state_dir.join("logs").display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
