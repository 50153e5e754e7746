//! `riffle`: the project's operator command line.

// The SDK's nested futures under `#[tokio::main]` exceed the default query depth.
#![recursion_limit = "256"]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use riffle_cli::demo::{self, DemoOptions};
use riffle_cli::pipeline::PipelineOptions;

#[derive(Parser)]
#[command(
    name = "riffle",
    version,
    about = "Riffle: a real-time event pipeline on AWS, and its local twin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline locally (emulators, registry, four stages), feed it generated
    /// events, wait until it drains and print a summary checked against the ground truth.
    Demo {
        /// Number of events to produce.
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Events per second.
        #[arg(long, default_value_t = 5_000)]
        rate: u32,
        /// Sources and weights: shop-web, shop-app, web, iot-gateway (e.g. "shop-web=3,web").
        #[arg(long, default_value = "shop-web,shop-app,web,iot-gateway")]
        sources: String,
        /// Share of invalid events (0..=1).
        #[arg(long, default_value_t = 0.02)]
        invalid_ratio: f64,
        /// Seed of the event generator (same seed, same events).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Give up if the pipeline makes no progress for this many seconds.
        #[arg(long, default_value_t = 60)]
        idle_timeout: u64,
        /// Put one Kinesis record per event instead of KPL aggregates packed per shard.
        #[arg(long)]
        no_aggregate: bool,
    },
    /// Schema registry tooling: register, check, list and diff schemas, and the CI gate.
    Schema(riffle_cli::schema::SchemaArgs),
    /// Archive maintenance: `compact` merges small Parquet objects per partition.
    Archive(riffle_cli::compact::ArchiveArgs),
    /// Rebuild the view from the S3 archive into a fresh DynamoDB table.
    Replay(riffle_cli::replay::ReplayArgs),
    /// Dead-letter and rejects queues: list them, show messages, redrive records.
    Dlq(riffle_cli::dlq::DlqArgs),
    /// The guarantees under faults: run the local pipeline while killing stage processes,
    /// injecting handler errors and throttling, and restarting kinesalite; then check that
    /// nothing was lost or doubled (exit 1 if anything was).
    Chaos {
        /// Number of events to produce.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Stage processes to kill (SIGKILL) during the run.
        #[arg(long, default_value_t = 20)]
        kills: u32,
        /// Seed of the events, the kill schedule and the injected faults.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Events per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Share of poison (invalid) events (0..=1).
        #[arg(long, default_value_t = 0.01)]
        invalid_ratio: f64,
        /// Probability a PutRecords entry is answered as throttled (0..1).
        #[arg(long, default_value_t = 0.05)]
        throttle_rate: f64,
        /// Probability a batch invocation fails transiently (0..1).
        #[arg(long, default_value_t = 0.02)]
        handler_error_rate: f64,
        /// Share of the producer's put calls sent again whole after they succeeded, as when
        /// an answer is lost (0..1): every record a copy the validator must drop.
        #[arg(long, default_value_t = 0.05)]
        resend_rate: f64,
        /// Do not restart kinesalite mid-run.
        #[arg(long)]
        no_kinesis_restart: bool,
        /// Give up waiting for the drain when nothing moves for this many seconds.
        #[arg(long, default_value_t = 300)]
        idle_timeout: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema(args) => riffle_cli::schema::run(args).await,
        Command::Archive(args) => riffle_cli::compact::main(args).await,
        Command::Replay(args) => riffle_cli::replay::main(args).await,
        Command::Dlq(args) => riffle_cli::dlq::main(args).await,
        Command::Chaos {
            events,
            kills,
            seed,
            rate,
            invalid_ratio,
            throttle_rate,
            handler_error_rate,
            resend_rate,
            no_kinesis_restart,
            idle_timeout,
        } => {
            let options = riffle_cli::chaos::ChaosOptions {
                events,
                kills,
                seed,
                rate,
                invalid_ratio,
                throttle_rate,
                handler_error_rate,
                resend_rate,
                restart_kinesis: !no_kinesis_restart,
                idle_timeout: Duration::from_secs(idle_timeout),
                ..riffle_cli::chaos::ChaosOptions::default()
            };
            chaos(options).await
        }
        Command::Demo {
            events,
            rate,
            sources,
            invalid_ratio,
            seed,
            idle_timeout,
            no_aggregate,
        } => {
            if !(0.0..=1.0).contains(&invalid_ratio) {
                eprintln!("error: --invalid-ratio must be between 0 and 1");
                return ExitCode::from(2);
            }
            if rate == 0 {
                eprintln!("error: --rate must be at least 1");
                return ExitCode::from(2);
            }
            let options = DemoOptions {
                events,
                rate,
                sources,
                invalid_ratio,
                seed,
                idle_timeout: Duration::from_secs(idle_timeout),
                progress: true,
                aggregate: !no_aggregate,
            };
            let pipeline = match PipelineOptions::for_checkout("demo") {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // Ctrl-C drops the run future: children die with their stdin and kill_on_drop,
            // the emulators with their Drop.
            let outcome = tokio::select! {
                r = demo::run(&options, pipeline) => r,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("\ninterrupted; stopping everything");
                    return ExitCode::from(130);
                }
            };
            match outcome {
                Ok(report) => {
                    print!("{}", demo::render(&report));
                    if report.differences.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("\nerror: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn chaos(options: riffle_cli::chaos::ChaosOptions) -> ExitCode {
    if let Err(e) = options.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let pipeline = match PipelineOptions::for_checkout("chaos") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = tokio::select! {
        r = riffle_cli::chaos::run(&options, pipeline) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted; stopping everything");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(report) => {
            print!("{}", riffle_cli::chaos::render(&report));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}
