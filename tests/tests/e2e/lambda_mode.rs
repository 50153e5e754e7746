//! The validator's real binary in Lambda mode (`AWS_LAMBDA_RUNTIME_API` set), behind the
//! local Lambda Runtime API, against the emulators and the registry: the code path Lambda
//! runs, not the local event source mapping. Events are put on the raw stream by a riffle
//! producer (KPL aggregates), read back with GetRecords and handed over as Lambda's Kinesis
//! event JSON. Checked: every valid event reaches the validated stream and every invalid one
//! the rejects queue; a redelivered batch adds nothing; a record whose schema cannot be
//! fetched comes back as a partial batch failure in Lambda's shape; a payload that is no
//! Kinesis event is a function error and the instance goes on serving.
//!
//! Needs the service binaries (`cargo build --workspace --bins`) and the emulators.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use riffle_harness::pipeline::{Pipeline, PipelineOptions};
use riffle_loadtest::{Expected, GeneratedEvent, Generator, GeneratorConfig};
use riffle_local::lambda_api::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_binary_serves_lambdas_runtime_api() {
    let mut options = PipelineOptions::for_checkout("lambda-mode").unwrap();
    options.state_dir = options
        .state_dir
        .join(format!("run-{}", std::process::id()));
    let mut pipeline = Pipeline::start(options, |_| {}).await.unwrap();
    // The local mappings would take the records too: only the Lambda-mode process reads them.
    pipeline.stop_stages().await.unwrap();

    let events = Generator::new(
        GeneratorConfig {
            seed: 11,
            invalid_ratio: 0.2,
            // Producers' trace roots carry the events' time, and X-Ray (AWS's translator
            // with it) refuses roots from outside its 30 days: events of now.
            start_time_ms: chrono::Utc::now().timestamp_millis(),
            ..GeneratorConfig::default()
        },
        pipeline.schema_ids(),
    )
    .unwrap()
    .batch(300)
    .unwrap();
    let valid = events
        .iter()
        .filter(|e| matches!(e.expected, Expected::Valid { .. }))
        .count();
    assert!(valid > 150 && valid < 300, "{valid} valid of 300");
    assert!(pipeline.produce(&events).await.unwrap().is_empty());

    let mut lambda = pipeline.start_lambda("validator").await.unwrap();
    let batches = pipeline
        .lambda_events("validator", &HashSet::new())
        .await
        .unwrap();
    assert!(!batches.is_empty());
    // The first invocation is traced as Lambda traces a function with active tracing: its
    // header names the function's segment, under which the batch keeps its own span.
    let (root, function_segment) = (lambda_trace_root(), "53995c3f42cd8ad8");
    for (i, event) in batches.iter().enumerate() {
        let header = (i == 0).then(|| format!("Root={root};Parent={function_segment};Sampled=1"));
        let answer = lambda
            .invoke_traced(serde_json::to_vec(event).unwrap(), header)
            .await
            .unwrap();
        assert_eq!(
            response_json(&answer.outcome),
            serde_json::json!({ "batchItemFailures": [] }),
            "every record handled"
        );
    }
    let first = riffle_runtime::deaggregate::expand(batches[0].clone());
    let trace_store = pipeline.trace_store().unwrap();
    let batch_span = wait_for_document(&trace_store, |d| {
        d["trace_id"] == root.as_str() && d["parent_id"] == function_segment
    })
    .await;
    assert_eq!(batch_span["type"], "subsegment", "{batch_span}");
    assert_eq!(batch_span["name"], "validator batch");
    let annotations = &batch_span["annotations"];
    assert_eq!(annotations["records"], first.records.len(), "{batch_span}");
    assert_eq!(annotations["failed"], 0);
    assert_eq!(annotations["outcome"], "ok");
    assert_eq!(
        annotations["shard"],
        first.records[0].source.shard_id.as_str()
    );
    assert!(
        batch_span
            .to_string()
            .contains(&first.records[0].kinesis.sequence_number),
        "the first position is in the span: {batch_span}"
    );
    // Its records' spans, in their events' traces, name the invocation's trace back; the
    // batch span counts them and lists their traces.
    let traced = annotations["traced"].as_u64().unwrap();
    assert!(
        traced > 0,
        "half the generated events carry a sampled header"
    );
    let records = documents(&trace_store)
        .into_iter()
        .filter(|d| d["annotations"]["invocation_trace"] == root.as_str())
        .collect::<Vec<_>>();
    assert_eq!(records.len() as u64, traced);
    for record in &records {
        assert_eq!(record["annotations"]["stage"], "validator");
        assert_ne!(record["trace_id"], root.as_str(), "the event's own trace");
        assert!(
            batch_span
                .to_string()
                .contains(record["trace_id"].as_str().unwrap()),
            "the batch span lists {}",
            record["trace_id"]
        );
    }
    let cold = lambda.cold_start().expect("first invocation answered");
    assert!(cold.init <= cold.first_answer);
    assert!(cold.peak_rss_kib > 0);
    println!(
        "validator cold start (debug build): init {:?}, first answer {:?}, peak RSS {} KiB",
        cold.init, cold.first_answer, cold.peak_rss_kib
    );

    assert_eq!(user_records(&pipeline, "enricher").await, valid);
    let rejects = pipeline.queue_drainer("RejectsQueue").unwrap();
    assert_eq!(rejects.drain().await.unwrap().len(), events.len() - valid);

    // Lambda redelivers a batch whose answer it never got: nothing is published twice.
    let answer = lambda
        .invoke(serde_json::to_vec(&batches[0]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response_json(&answer.outcome),
        serde_json::json!({ "batchItemFailures": [] })
    );
    assert_eq!(user_records(&pipeline, "enricher").await, valid);

    // A record whose writer schema the instance has not seen, while the registry is gone:
    // only it is failed, by its sequence number, so Lambda retries from it.
    let seen: HashSet<String> = batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.kinesis.sequence_number.clone()))
        .collect();
    let unseen = new_schema_version(&pipeline, &events).await;
    let producer = pipeline.producer(false).await.unwrap();
    let known = events
        .iter()
        .filter(|e| matches!(e.expected, Expected::Valid { .. }))
        .take(3);
    for e in known {
        producer
            .send_framed(e.partition_key.clone(), e.record.clone())
            .await
            .unwrap();
    }
    producer.send_framed("unseen", unseen).await.unwrap();
    assert!(producer.close().await.unwrap().is_empty());
    pipeline.kill_stage("schema-registry").await.unwrap();
    let fresh = pipeline.lambda_events("validator", &seen).await.unwrap();
    let unseen_seq: Vec<String> = fresh
        .iter()
        .flat_map(|b| &b.records)
        .filter(|r| r.kinesis.partition_key == "unseen")
        .map(|r| r.kinesis.sequence_number.clone())
        .collect();
    assert_eq!(unseen_seq.len(), 1);
    let mut failed = Vec::new();
    for event in &fresh {
        let answer = lambda
            .invoke(serde_json::to_vec(event).unwrap())
            .await
            .unwrap();
        let response = response_json(&answer.outcome);
        for failure in response["batchItemFailures"].as_array().unwrap() {
            failed.push(failure["itemIdentifier"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(failed, unseen_seq);

    // Not a Kinesis event: the invocation fails as a function error, in Lambda's shape, and
    // the same instance answers the next one.
    let answer = lambda.invoke(br#"{"Records": 5}"#.to_vec()).await.unwrap();
    match &answer.outcome {
        Outcome::FunctionError { body, .. } => {
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(body["errorType"].is_string(), "{body}");
            assert!(body["errorMessage"].is_string(), "{body}");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    let answer = lambda.invoke(br#"{"Records": []}"#.to_vec()).await.unwrap();
    assert_eq!(
        response_json(&answer.outcome),
        serde_json::json!({ "batchItemFailures": [] })
    );
    lambda.stop().await;
    pipeline.shutdown().await;
}

/// A trace root as Lambda makes one: this second, then 96 bits unique to this run.
fn lambda_trace_root() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!(
        "1-{:08x}-{:012x}{:012x}",
        now.as_secs(),
        std::process::id(),
        now.subsec_nanos()
    )
}

/// Every segment document the local X-Ray daemon has filed.
fn documents(store: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(store)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The first document `matches` accepts, once the daemon has filed it (it writes its file
/// every 100 ms).
async fn wait_for_document(
    store: &std::path::Path,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(found) = documents(store).into_iter().find(|d| matches(d)) {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such document in {}",
            store.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn response_json(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Response(body) => serde_json::from_slice(body).unwrap(),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// User records on the input stream of `service`, KPL aggregates unpacked.
async fn user_records(pipeline: &Pipeline, service: &str) -> usize {
    pipeline
        .lambda_events(service, &HashSet::new())
        .await
        .unwrap()
        .into_iter()
        .map(|e| riffle_runtime::deaggregate::expand(e).records.len())
        .sum()
}

/// A valid event's record re-framed with the id of a new version of its subject's schema
/// (one optional field more), registered now, so no stage has it cached.
async fn new_schema_version(pipeline: &Pipeline, events: &[GeneratedEvent]) -> Vec<u8> {
    let (event, subject) = events
        .iter()
        .find_map(|e| match &e.expected {
            Expected::Valid { subject, .. } => Some((e, subject.clone())),
            Expected::Rejected { .. } => None,
        })
        .unwrap();
    let codec = riffle_codec::EnvelopeCodec::new(pipeline.schema_ids().envelope).unwrap();
    let mut envelope = codec.decode(&event.record).unwrap();
    let id = u32::try_from(envelope.schema_id).unwrap();
    let registry = riffle_registry_client::RegistryClient::new(&registry_url(pipeline)).unwrap();
    let mut schema: serde_json::Value =
        serde_json::from_str(&registry.schema_by_id(id).await.unwrap()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "lambda_mode_note", "type": ["null", "string"], "default": null
        }));
    let new_id = registry
        .register(&subject, &schema.to_string())
        .await
        .unwrap();
    assert_ne!(new_id, id);
    envelope.schema_id = i32::try_from(new_id).unwrap();
    envelope.event_id = "lambda-mode-unseen-schema".into();
    codec.encode(&envelope).unwrap()
}

fn registry_url(pipeline: &Pipeline) -> String {
    pipeline
        .deployment()
        .export(riffle_local::REGISTRY_URL_EXPORT)
        .unwrap()
        .to_owned()
}
