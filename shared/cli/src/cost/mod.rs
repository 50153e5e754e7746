//! `riffle cost`: what the pipeline costs a month on AWS at a given event rate, component by
//! component, from figures measured per event on the local twin ([`Figures`], in a
//! `riffle-dev load` report or written by `riffle-dev demo`) and a dated price table per region (`infra/pricing/<region>.json`).
//! It names the dominant cost and what would cut it.
//!
//! Layout: [`figures`] (what a run measured, per event), [`pricing`] (the price table),
//! [`model`] (the monthly bill from both, and the advice). This file is the command line.

pub mod figures;
pub mod model;
pub mod pricing;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

pub use figures::{Figures, StageFigures};
pub use model::{Bill, Line, Scenario, bill};
pub use pricing::Pricing;

/// `riffle cost`.
#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// Events per second, averaged over the month.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Measured figures: a `riffle-dev load` report.json or the figures `riffle-dev demo`
    /// writes (.riffle/demo-figures.json); default the committed load report
    /// (docs/load/baseline/report.json).
    #[arg(long)]
    pub figures: Option<PathBuf>,
    /// AWS region of the price table (`infra/pricing/<region>.json`).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Memory of each stage function in MB (the templates' default is 512).
    #[arg(long, default_value_t = 512)]
    pub memory_mb: u32,
    /// Share of events traced in X-Ray (the validator's default sample rate).
    #[arg(long, default_value_t = riffle_trace::DEFAULT_SAMPLE_RATE)]
    pub trace_sample_rate: f64,
    /// Print the bill as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `riffle cost`.
pub fn main(args: &CostArgs) -> ExitCode {
    crate::report(run(args))
}

/// The text `riffle cost` prints.
///
/// # Errors
/// The figures or the price table cannot be read, or the options make no sense.
pub fn run(args: &CostArgs) -> Result<String, String> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        return Err(format!(
            "--rate must be a positive number, not {}",
            args.rate
        ));
    }
    if !(0.0..=1.0).contains(&args.trace_sample_rate) {
        return Err("--trace-sample-rate must be between 0 and 1".into());
    }
    let root = riffle_plan::project_root().unwrap_or_else(|_| PathBuf::from("."));
    let figures_path = args
        .figures
        .clone()
        .unwrap_or_else(|| root.join(figures::BASELINE_REPORT));
    let figures = Figures::read(&figures_path)?;
    let pricing = Pricing::read(
        &root
            .join("infra/pricing")
            .join(format!("{}.json", args.region)),
    )?;
    let scenario = Scenario {
        events_per_second: args.rate,
        memory_mb: args.memory_mb,
        trace_sample_rate: args.trace_sample_rate,
    };
    let bill = bill(&figures, &pricing, &scenario);
    if args.json {
        return serde_json::to_string_pretty(&bill)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string());
    }
    Ok(model::render(&bill, &figures, &pricing))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(figures: Option<PathBuf>) -> CostArgs {
        CostArgs {
            rate: 2_000.0,
            figures,
            region: "us-east-1".into(),
            memory_mb: 512,
            trace_sample_rate: 0.01,
            json: false,
        }
    }

    #[test]
    fn the_command_prices_written_figures_and_says_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("riffle-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("figures.json");
        let figures = Figures {
            source: "riffle-dev demo --events 10 --rate 10".into(),
            measured_at: "2026-12-06T00:00:00Z".into(),
            events: 10,
            valid_events: 10,
            event_bytes: 400.0,
            put_units: 0.05,
            dynamo_reads: 0.02,
            dynamo_writes: 0.015,
            s3_puts: 0.0005,
            archive_bytes: 150.0,
            queue_messages: 0.02,
            stages: vec![StageFigures {
                stage: "validator".into(),
                batches: 0.002,
                handler_ms: 0.2,
            }],
        };
        figures.write(&path).unwrap();
        assert_eq!(Figures::read(&path).unwrap(), figures);

        let text = run(&args(Some(path.clone()))).unwrap();
        assert!(
            text.contains("at 2000 events/s") && text.contains("dominant:"),
            "{text}"
        );
        let json = run(&CostArgs {
            json: true,
            ..args(Some(path.clone()))
        })
        .unwrap();
        let bill: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(bill["total"].as_f64().unwrap() > 0.0);

        let missing = run(&args(Some(dir.join("none.json")))).unwrap_err();
        assert!(missing.contains("run `riffle-dev load`"), "{missing}");
        // By default the committed load report is priced, its figures read from inside it.
        let baseline = run(&args(None)).unwrap();
        assert!(
            baseline.contains("figures: ") && baseline.contains("riffle-dev load --profile"),
            "{baseline}"
        );
        let region = run(&CostArgs {
            region: "mars-1".into(),
            ..args(Some(path.clone()))
        })
        .unwrap_err();
        assert!(region.contains("no price table"), "{region}");
        let rate = run(&CostArgs {
            rate: -1.0,
            ..args(Some(path))
        })
        .unwrap_err();
        assert!(rate.contains("--rate"), "{rate}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
