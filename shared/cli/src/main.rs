//! `riffle`: the project's operator command line.

// The SDK's nested futures under `#[tokio::main]` exceed the default query depth.
#![recursion_limit = "256"]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "riffle",
    version,
    about = "Riffle's operator tools: deploys, schemas, dead-letter queues, archive and view maintenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Schema registry tooling: register, check, list and diff schemas, and the CI gate.
    Schema(riffle_cli::schema::SchemaArgs),
    /// Archive maintenance: `compact` merges small Parquet objects per partition.
    Archive(riffle_cli::compact::ArchiveArgs),
    /// Rebuild the view from the S3 archive into a fresh DynamoDB table.
    Replay(riffle_cli::replay::ReplayArgs),
    /// Dead-letter and rejects queues: list them, show messages, redrive records.
    Dlq(riffle_cli::dlq::DlqArgs),
    /// Where one event went, stage by stage (X-Ray), or the slowest recent events.
    Trace(riffle_cli::trace::TraceArgs),
    /// What the pipeline costs a month on AWS at an event rate, from measured figures.
    Cost(riffle_cli::cost::CostArgs),
    /// Evaluate the templates' alarms against the local stack's metrics: which are in ALARM and why.
    Alarms(riffle_cli::alarms::AlarmsArgs),
    /// The view through its query API: `riffle view query windows | top | series`.
    View(riffle_cli::view::ViewArgs),
    /// Put events into a running stack's raw stream: JSON lines of a registered subject, or
    /// generated ones (`riffle-dev up` prints the variables it needs).
    Produce(riffle_cli::produce::ProduceArgs),
    /// Create or update the platform and service stacks through CloudFormation change sets
    /// (`--plan`: only show the changes).
    Deploy(riffle_cli::deploy::DeployArgs),
    /// Commands of the developer harness (`riffle-dev`: demo, chaos, schema-gate), run
    /// from the `riffle-dev` binary beside this one when it is installed.
    #[command(external_subcommand)]
    Dev(Vec<String>),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema(args) => riffle_cli::schema::run(args).await,
        Command::Archive(args) => riffle_cli::compact::main(args).await,
        Command::Replay(args) => riffle_cli::replay::main(args).await,
        Command::Dlq(args) => riffle_cli::dlq::main(args).await,
        Command::Trace(args) => riffle_cli::trace::main(&args).await,
        Command::Cost(args) => riffle_cli::cost::main(&args),
        Command::Alarms(args) => riffle_cli::alarms::main(args).await,
        Command::Deploy(args) => riffle_cli::deploy::main(args).await,
        Command::Produce(args) => riffle_cli::produce::main(args).await,
        Command::View(args) => riffle_cli::view::main(args).await,
        Command::Dev(args) => riffle_cli::dev::forward(&args),
    }
}
