//! The monthly bill: each component's cost at an event rate, from the measured figures and a
//! price table, the dominant one, and what would cut it.

use serde::Serialize;

use super::figures::Figures;
use super::pricing::Pricing;

/// Hours in the month the bill is for (AWS bills 730 a month).
pub const HOURS_PER_MONTH: f64 = 730.0;
/// The streams events cross: raw, validated, enriched.
pub const STREAMS: f64 = 3.0;
/// Reads of each stream's data: raw and validated by one stage each, enriched by two.
pub const STREAM_READS: f64 = 4.0;
/// A shard takes 1 MiB/s; provisioned shards run at most at this share of it (the level at
/// which a shard autoscaler would add shards).
pub const SHARD_TARGET_UTILIZATION: f64 = 0.75;
/// Days the archive spends in each storage class (templates: Standard-IA after 30 days,
/// Glacier IR after 90, expiry after 365).
pub const ARCHIVE_DAYS: [f64; 3] = [30.0, 60.0, 275.0];
/// EMF lines per batch and stage (the handler's and the runtime's), bytes each.
pub const EMF_LINES_PER_BATCH: f64 = 2.0;
/// Size of one EMF line.
pub const EMF_LINE_BYTES: f64 = 700.0;
/// Custom metrics Riffle publishes (metric and `Service` pairs), about.
pub const CUSTOM_METRICS: f64 = 60.0;
/// SQS requests per queued message: sent, received and deleted in batches of 10 (the
/// stages send rejects and dead letters in batches; a consumer should read them so).
pub const SQS_REQUESTS_PER_MESSAGE: f64 = 0.3;

/// What the bill is for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scenario {
    /// Events per second, averaged over the month.
    pub events_per_second: f64,
    /// Stage function memory.
    pub memory_mb: u32,
    /// Share of events traced.
    pub trace_sample_rate: f64,
}

/// One component of the bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The service and what is billed.
    pub component: String,
    /// USD per month.
    pub monthly: f64,
    /// How it was computed.
    pub basis: String,
}

/// The month's bill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bill {
    /// What it is for.
    pub scenario: Scenario,
    /// Events in the month.
    pub events: f64,
    /// Provisioned shards per stream.
    pub shards_per_stream: u32,
    /// Components, most expensive first.
    pub lines: Vec<Line>,
    /// The same streams on-demand instead of provisioned (USD per month).
    pub kinesis_on_demand: f64,
    /// Sum of the lines.
    pub total: f64,
    /// What would cut the bill, most useful first.
    pub advice: Vec<String>,
}

/// The bill for `scenario` from `figures` at `pricing`.
pub fn bill(figures: &Figures, pricing: &Pricing, scenario: &Scenario) -> Bill {
    let rate = scenario.events_per_second;
    let events = rate * 3600.0 * HOURS_PER_MONTH;
    let per_million = |count: f64, price: f64| count / 1e6 * price;
    // AWS bills storage, logs and transfer per GB of 2^30 bytes.
    let gb = |bytes: f64| bytes / 1_073_741_824.0;
    let mut lines = Vec::new();
    let mut line = |component: &str, monthly: f64, basis: String| {
        lines.push(Line {
            component: component.to_owned(),
            monthly,
            basis,
        });
    };

    let bytes_per_second = rate * figures.event_bytes;
    let shards = (bytes_per_second / (1_048_576.0 * SHARD_TARGET_UTILIZATION))
        .ceil()
        .max(1.0);
    let k = &pricing.kinesis;
    line(
        "Kinesis shard-hours",
        shards * STREAMS * HOURS_PER_MONTH * k.shard_hour,
        format!("{shards} shards x {STREAMS} streams x {HOURS_PER_MONTH} h"),
    );
    line(
        "Kinesis PUT payload units",
        per_million(events * figures.put_units, k.put_units_per_million),
        format!("{:.4} units per event", figures.put_units),
    );
    let kinesis_on_demand = STREAMS * HOURS_PER_MONTH * k.on_demand_stream_hour
        + gb(events * figures.event_bytes)
            * (STREAMS * k.on_demand_ingest_per_gb + STREAM_READS * k.on_demand_retrieve_per_gb);

    let invocations: f64 = figures.stages.iter().map(|s| s.batches).sum::<f64>() * events;
    let handler_seconds: f64 =
        figures.stages.iter().map(|s| s.handler_ms).sum::<f64>() / 1000.0 * events;
    let gb_seconds = handler_seconds * f64::from(scenario.memory_mb) / 1024.0;
    line(
        "Lambda compute",
        gb_seconds * pricing.lambda.gb_second_arm64,
        format!(
            "{:.3} handler ms per event x {} MB",
            handler_seconds / events * 1000.0,
            scenario.memory_mb
        ),
    );
    line(
        "Lambda requests",
        per_million(invocations, pricing.lambda.requests_per_million),
        format!("{:.5} invocations per event", invocations / events),
    );

    let d = &pricing.dynamodb;
    line(
        "DynamoDB writes",
        per_million(events * figures.dynamo_writes, d.write_units_per_million),
        format!(
            "{:.4} items per event (1 KB or less each)",
            figures.dynamo_writes
        ),
    );
    line(
        "DynamoDB reads",
        per_million(events * figures.dynamo_reads, d.read_units_per_million),
        format!("{:.4} items per event", figures.dynamo_reads),
    );

    let s3 = &pricing.s3;
    line(
        "S3 PUTs",
        events * figures.s3_puts / 1000.0 * s3.puts_per_thousand,
        format!("{:.6} objects per event", figures.s3_puts),
    );
    let daily_gb = gb(rate * 86_400.0 * figures.archive_bytes);
    let [standard, ia, glacier] = ARCHIVE_DAYS;
    line(
        "S3 storage (steady state)",
        daily_gb
            * (standard * s3.standard_gb_month
                + ia * s3.standard_ia_gb_month
                + glacier * s3.glacier_ir_gb_month),
        format!("{daily_gb:.2} GB a day: {standard} days Standard, {ia} IA, {glacier} Glacier IR"),
    );

    line(
        "SQS",
        per_million(
            events * figures.queue_messages * SQS_REQUESTS_PER_MESSAGE,
            pricing.sqs.requests_per_million,
        ),
        format!("{:.4} messages per event", figures.queue_messages),
    );
    let emf_gb = gb(invocations * EMF_LINES_PER_BATCH * EMF_LINE_BYTES);
    line(
        "CloudWatch logs and metrics",
        emf_gb * pricing.cloudwatch.logs_ingest_per_gb
            + CUSTOM_METRICS * pricing.cloudwatch.custom_metric_month,
        format!("{emf_gb:.2} GB of EMF lines, {CUSTOM_METRICS} custom metrics"),
    );
    line(
        "X-Ray",
        per_million(
            events * scenario.trace_sample_rate,
            pricing.xray.traces_recorded_per_million,
        ),
        format!("{} of events traced", scenario.trace_sample_rate),
    );
    line(
        "KMS",
        pricing.kms.key_month,
        "one customer managed key".into(),
    );

    lines.sort_by(|a, b| b.monthly.total_cmp(&a.monthly));
    let total = lines.iter().map(|l| l.monthly).sum();
    let mut bill = Bill {
        scenario: *scenario,
        events,
        shards_per_stream: shards as u32,
        lines,
        kinesis_on_demand,
        total,
        advice: Vec::new(),
    };
    bill.advice = advice(&bill, figures);
    bill
}

/// What would cut `bill`, most useful first.
fn advice(bill: &Bill, figures: &Figures) -> Vec<String> {
    let cost = |name: &str| {
        bill.lines
            .iter()
            .find(|l| l.component == name)
            .map_or(0.0, |l| l.monthly)
    };
    let mut out = Vec::new();
    let shard_hours = cost("Kinesis shard-hours");
    let provisioned = shard_hours + cost("Kinesis PUT payload units");
    let per_shard = shard_hours / f64::from(bill.shards_per_stream.max(1));
    // Provisioned shards are sized for the peak; on-demand bills what flows. The peak at
    // which the shards for it cost what on-demand costs for this month's traffic:
    let break_even_shards = ((bill.kinesis_on_demand - (provisioned - shard_hours)) / per_shard)
        .floor()
        .max(0.0);
    if bill.kinesis_on_demand < provisioned {
        out.push(format!(
            "Kinesis on-demand would cost {:.0} USD instead of {provisioned:.0} provisioned",
            bill.kinesis_on_demand
        ));
    } else {
        out.push(format!(
            "Kinesis provisioned ({provisioned:.0} USD) beats on-demand ({:.0}) while shards \
             follow the traffic; on-demand pays off only if the peak would need more than \
             {break_even_shards:.0} shards per stream ({:.1}x this rate's {})",
            bill.kinesis_on_demand,
            break_even_shards / f64::from(bill.shards_per_stream.max(1)),
            bill.shards_per_stream
        ));
    }
    out.push(
        "keep producers aggregating (riffle-producer's KPL records): a PUT payload unit per \
         25 KiB, not per event"
            .to_owned(),
    );
    if let Some(top) = bill.lines.first() {
        let tip = match top.component.as_str() {
            "Lambda compute" => {
                "Lambda compute leads: longer batching windows and larger batches spread each \
                 invocation's fixed cost over more events; measure memory sizes (CPU scales \
                 with memory, so 512 MB may finish sooner than 256 for the same GB-s)"
            }
            "Lambda requests" => {
                "Lambda requests lead: larger batches and batching windows mean fewer \
                 invocations per event"
            }
            "DynamoDB writes" | "DynamoDB reads" => {
                "DynamoDB leads: the view is written once per item per batch, so a longer \
                 aggregator batching window writes fewer items per event; marks cost one item \
                 per shard and batch"
            }
            "Kinesis shard-hours" => {
                "shard-hours lead: size shards to the traffic (an autoscaler; not built yet), or \
                 go on-demand if the traffic is spiky (see below)"
            }
            "X-Ray" => "X-Ray leads: lower RIFFLE_TRACE_SAMPLE_RATE",
            "CloudWatch logs and metrics" => {
                "CloudWatch leads: at low rates the custom metrics are a fixed cost; fewer \
                 batches mean fewer EMF lines"
            }
            "S3 storage (steady state)" => {
                "S3 storage leads: shorten the lifecycle (Glacier IR sooner, expiry earlier) \
                 or compact small objects"
            }
            _ => "",
        };
        if !tip.is_empty() {
            out.insert(0, tip.to_owned());
        }
    }
    if figures.dynamo_writes > 0.05 {
        out.push(format!(
            "{:.3} DynamoDB writes per event is above the 0.05 the bookkeeping should cost",
            figures.dynamo_writes
        ));
    }
    out
}

/// The bill as a person reads it.
pub fn render(bill: &Bill, figures: &Figures, pricing: &Pricing) -> String {
    let mut out = format!(
        "Riffle on AWS at {} events/s: {:.1} billion events a month ({} provisioned shards per stream)\n",
        bill.scenario.events_per_second,
        bill.events / 1e9,
        bill.shards_per_stream
    );
    out.push_str(&format!(
        "prices: {} as of {}; figures: {} ({})\n\n",
        pricing.region, pricing.as_of, figures.source, figures.measured_at
    ));
    for l in &bill.lines {
        let share = if bill.total > 0.0 {
            l.monthly / bill.total * 100.0
        } else {
            0.0
        };
        out.push_str(&format!(
            "  {:<28} {:>12.2} USD  {share:>5.1} %  {}\n",
            l.component, l.monthly, l.basis
        ));
    }
    out.push_str(&format!(
        "  {:<28} {:>12.2} USD a month\n\n",
        "total", bill.total
    ));
    if let Some(top) = bill.lines.first() {
        out.push_str(&format!("dominant: {}\n", top.component));
    }
    for a in &bill.advice {
        out.push_str(&format!("- {a}\n"));
    }
    out.push_str(
        "\nHandler time was measured on the local twin (its emulators answer slower than AWS), \
         so Lambda compute is an upper bound; DynamoDB assumes items of 1 KB or less.\n",
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cost::figures::StageFigures;

    fn figures() -> Figures {
        Figures {
            source: "test".into(),
            measured_at: "2026-12-06T00:00:00Z".into(),
            events: 1000,
            valid_events: 1000,
            event_bytes: 500.0,
            put_units: 0.04,
            dynamo_reads: 0.02,
            dynamo_writes: 0.01,
            s3_puts: 0.0004,
            archive_bytes: 100.0,
            queue_messages: 0.02,
            stages: vec![StageFigures {
                stage: "validator".into(),
                batches: 0.001,
                handler_ms: 0.01,
            }],
        }
    }

    fn pricing() -> Pricing {
        let root = riffle_plan::project_root().unwrap();
        Pricing::read(&root.join("infra/pricing/us-east-1.json")).unwrap()
    }

    #[test]
    fn each_line_is_its_price_times_its_count() {
        let scenario = Scenario {
            events_per_second: 1000.0,
            memory_mb: 1024,
            trace_sample_rate: 0.0,
        };
        let b = bill(&figures(), &pricing(), &scenario);
        let line = |name: &str| {
            b.lines
                .iter()
                .find(|l| l.component == name)
                .unwrap()
                .monthly
        };
        let events = 1000.0 * 3600.0 * 730.0;
        assert_eq!(b.events, events);
        // 500 KB/s fits one shard per stream.
        assert_eq!(b.shards_per_stream, 1);
        assert!((line("Kinesis shard-hours") - 3.0 * 730.0 * 0.015).abs() < 1e-9);
        assert!((line("DynamoDB writes") - events * 0.01 / 1e6 * 0.625).abs() < 1e-6);
        assert!((line("Lambda compute") - events * 0.01 / 1000.0 * 0.0000133334).abs() < 1e-6);
        assert!((line("Lambda requests") - events * 0.001 / 1e6 * 0.20).abs() < 1e-6);
        assert_eq!(line("X-Ray"), 0.0);
        assert!((b.total - b.lines.iter().map(|l| l.monthly).sum::<f64>()).abs() < 1e-9);
        assert!(b.lines.windows(2).all(|w| w[0].monthly >= w[1].monthly));
        // Ten times the rate needs more shards.
        let busy = bill(
            &figures(),
            &pricing(),
            &Scenario {
                events_per_second: 10_000.0,
                ..scenario
            },
        );
        assert_eq!(busy.shards_per_stream, 7);
        let text = render(&busy, &figures(), &pricing());
        assert!(
            text.contains("dominant:") && text.contains("total"),
            "{text}"
        );
    }

    #[test]
    fn advice_weighs_on_demand_against_provisioned() {
        let scenario = Scenario {
            events_per_second: 1.0,
            memory_mb: 512,
            trace_sample_rate: 0.05,
        };
        let b = bill(&figures(), &pricing(), &scenario);
        // A stream-hour on-demand costs more than a shard-hour, so one steady shard is cheaper;
        // the advice says where on-demand would win.
        assert!(b.kinesis_on_demand > 3.0 * 730.0 * 0.015);
        assert!(
            b.advice
                .iter()
                .any(|a| a.contains("on-demand pays off only if the peak")),
            "{:?}",
            b.advice
        );
    }
}
