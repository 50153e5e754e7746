//! `riffle-dev`: Riffle's local twin for developers: the whole pipeline on one machine
//! (`demo`), measured under a load profile (`load`), the guarantees under faults (`chaos`), the schema CI gate (`schema-gate`) and the
//! stage binaries' cold starts in Lambda mode (`coldstart`).

// The SDK's nested futures under `#[tokio::main]` exceed the default query depth.
#![recursion_limit = "256"]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use riffle_harness::demo::{self, DemoOptions};
use riffle_harness::pipeline::PipelineOptions;
use riffle_registry_client::CompatibilityLevel;

#[derive(Parser)]
#[command(
    name = "riffle-dev",
    version,
    about = "Riffle's local twin: the whole pipeline on one machine, its fault tests and the schema gate"
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
        /// Share of events the validator starts an X-Ray trace for (0..=1); every one by
        /// default, so `riffle trace` finds any event the demo produced.
        #[arg(long, default_value_t = 1.0)]
        trace_sample_rate: f64,
    },
    /// Offer a load profile to the local twin and measure it second by second: offered and
    /// accepted events, throttles, per-stage throughput and iterator age, ingest-to-view
    /// latency, Kinesis, DynamoDB and S3 requests, Lambda-equivalent compute. Writes
    /// report.json, report.csv and report.html (plots, opens offline) to --out.
    Load {
        /// constant, ramp, step, spike or soak.
        #[arg(long, default_value = "ramp")]
        profile: String,
        /// Events per second: the constant and soak rate, the end of a ramp or step, the
        /// base of a spike.
        #[arg(long, default_value_t = 2_000.0)]
        rate: f64,
        /// Where a ramp or step starts (default a tenth of --rate).
        #[arg(long)]
        from_rate: Option<f64>,
        /// A spike's rate (default three times --rate).
        #[arg(long)]
        peak: Option<f64>,
        /// Steps of a step profile.
        #[arg(long, default_value_t = 4)]
        steps: u32,
        /// When a spike starts, seconds into the run (default a third of the run).
        #[arg(long)]
        spike_at: Option<f64>,
        /// How long a spike lasts, seconds.
        #[arg(long, default_value_t = 10.0)]
        spike_for: f64,
        /// Seconds of offered load (default 60; soak 1800).
        #[arg(long)]
        duration: Option<u64>,
        /// Sources and weights: shop-web, shop-app, web, iot-gateway.
        #[arg(long, default_value = "shop-web,shop-app,web,iot-gateway")]
        sources: String,
        /// Share of invalid events (0..=1).
        #[arg(long, default_value_t = 0.02)]
        invalid_ratio: f64,
        /// Seed of the event generator.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Put one Kinesis record per event instead of KPL aggregates packed per shard.
        #[arg(long)]
        no_aggregate: bool,
        /// Share of events the validator starts an X-Ray trace for (0..=1).
        #[arg(long, default_value_t = riffle_trace::DEFAULT_SAMPLE_RATE)]
        trace_sample_rate: f64,
        /// Seconds to wait for the stages to catch up after the last event.
        #[arg(long, default_value_t = 120)]
        drain_timeout: u64,
        /// Directory for the three files (default .riffle/reports/<profile>-<UTC time>).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Reshard the raw stream by the autoscaler's rules as the load runs (SplitShard and
        /// MergeShards; a second stands for a minute: up after 5 busy seconds, down after 60
        /// idle ones).
        #[arg(long)]
        autoscale: bool,
        /// Most shards the autoscaler may open.
        #[arg(long, default_value_t = 8)]
        max_shards: u32,
        /// Records per second the autoscaler counts a shard as full at (AWS: 1000); lower
        /// it to drive the decisions on a machine that cannot offer that much.
        #[arg(long, default_value_t = 1000.0)]
        shard_capacity: f64,
        /// At the end, read the view, archive and rejects back against the ground truth and
        /// check each partition key's order; exit 1 if anything was lost, doubled or reordered.
        #[arg(long)]
        check: bool,
        /// Where the twin keeps its state and logs (wiped at start; default `.riffle/load`).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
    },
    /// The local twin kept running until Ctrl-C: emulators, X-Ray daemon, registry and the
    /// four stages, provisioned from the templates; prints the variables that point another
    /// shell (producers, `riffle`, the AWS CLI) at it, and restarts a stage that exits.
    Up {
        /// Share of events without a trace header the validator starts an X-Ray trace for.
        #[arg(long, default_value_t = riffle_trace::DEFAULT_SAMPLE_RATE)]
        trace_sample_rate: f64,
        /// Where the twin keeps its state and logs (wiped at start; default `.riffle/up`).
        #[arg(long)]
        state_dir: Option<std::path::PathBuf>,
    },
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
    /// Cold starts of the stage binaries in Lambda mode: each run starts a fresh process
    /// behind a local Lambda Runtime API (as a new sandbox), invokes it with a real batch from
    /// its input stream, and times process start to first poll (init) and to first answer;
    /// the rest of the batches are answered warm. Prints medians, maxima and peak RSS.
    /// Measure a release build (`cargo build --release --workspace --bins`, then
    /// `target/release/riffle-dev coldstart`).
    Coldstart {
        /// Fresh processes per stage.
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Events put on the raw stream first (the batches come from them).
        #[arg(long, default_value_t = 1_000)]
        events: usize,
        /// Stages to measure (repeat; all four by default).
        #[arg(long = "stage", value_name = "STAGE")]
        stages: Vec<String>,
        /// Extra environment for the function processes, to compare settings (repeat;
        /// e.g. `--env MIMALLOC_ARENA_EAGER_COMMIT=0`).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
        env: Vec<(String, String)>,
    },
    /// The schema CI gate: replay the git history of every schema under schemas/ into a
    /// private local registry (emulators and registry started here), then check the working
    /// tree.
    ///
    /// Every committed version of each .avsc file up to --base is registered in commit order,
    /// as production would have seen them; a committed version the registry refuses as
    /// incompatible fails the gate (production would have refused it too). Then each file of
    /// the working tree is checked as `riffle schema check` does, with the global level
    /// --level. Exits 0 if everything is compatible, 1 with the reasons if not, 2 if the gate
    /// could not run. Needs the schema-registry binary beside this one (or RIFFLE_BIN_DIR) and
    /// the emulators (`make install`).
    SchemaGate {
        /// The last commit production has seen (history after it is not replayed).
        #[arg(long, value_name = "REV", default_value = "HEAD")]
        base: String,
        /// The compatibility level the local registry holds every subject to.
        #[arg(long, value_name = "LEVEL", default_value = "BACKWARD")]
        level: CompatibilityLevel,
        /// The git repository whose schemas/ to gate (default: the one around the current
        /// directory).
        #[arg(long, value_name = "DIR")]
        repo: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::SchemaGate { base, level, repo } => riffle_cli::schema::exit_code(
            riffle_harness::schema_gate::run(&base, level, repo).await,
        ),
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
            let options = riffle_harness::chaos::ChaosOptions {
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
                ..riffle_harness::chaos::ChaosOptions::default()
            };
            chaos(options).await
        }
        Command::Coldstart {
            runs,
            events,
            stages,
            env,
        } => {
            coldstart(riffle_harness::coldstart::ColdStartOptions {
                runs,
                events,
                stages,
                env,
                progress: true,
            })
            .await
        }
        Command::Up {
            trace_sample_rate,
            state_dir,
        } => {
            if !(0.0..=1.0).contains(&trace_sample_rate) {
                eprintln!("error: --trace-sample-rate must be between 0 and 1");
                return ExitCode::from(2);
            }
            up(
                riffle_harness::up::UpOptions { trace_sample_rate },
                state_dir,
            )
            .await
        }
        Command::Load {
            profile,
            rate,
            from_rate,
            peak,
            steps,
            spike_at,
            spike_for,
            duration,
            sources,
            invalid_ratio,
            seed,
            no_aggregate,
            trace_sample_rate,
            drain_timeout,
            out,
            autoscale,
            max_shards,
            shard_capacity,
            check,
            state_dir,
        } => {
            let fail = |message: String| {
                eprintln!("error: {message}");
                ExitCode::from(2)
            };
            let duration = duration.unwrap_or(if profile == "soak" { 1800 } else { 60 });
            if duration == 0 {
                return fail("--duration must be at least 1 second".into());
            }
            let from = from_rate.unwrap_or(rate / 10.0);
            let rates = [Some(rate), from_rate, peak];
            if rates.iter().flatten().any(|r| !r.is_finite() || *r < 0.0) {
                return fail("rates must be finite and not negative".into());
            }
            if !(shard_capacity.is_finite() && shard_capacity >= 1.0) {
                return fail("--shard-capacity must be at least 1 record/s".into());
            }
            if !(0.0..=1.0).contains(&invalid_ratio) || !(0.0..=1.0).contains(&trace_sample_rate) {
                return fail("--invalid-ratio and --trace-sample-rate are between 0 and 1".into());
            }
            use riffle_harness::load::profile::Profile;
            let profile = match profile.as_str() {
                "constant" => Profile::Constant { rate },
                "soak" => Profile::Soak { rate },
                "ramp" => Profile::Ramp { from, to: rate },
                "step" if steps >= 2 => Profile::Step {
                    from,
                    to: rate,
                    steps,
                },
                "step" => return fail("--steps must be at least 2".into()),
                "spike" => Profile::Spike {
                    rate,
                    peak: peak.unwrap_or(rate * 3.0),
                    at: spike_at.unwrap_or(duration as f64 / 3.0),
                    length: spike_for,
                },
                other => {
                    return fail(format!(
                        "--profile {other}: expected constant, ramp, step, spike or soak"
                    ));
                }
            };
            let out = match out {
                Some(dir) => dir,
                None => match riffle_plan::project_root() {
                    Ok(root) => root.join(".riffle/reports").join(format!(
                        "{}-{}",
                        profile.name(),
                        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                    )),
                    Err(e) => return fail(e.to_string()),
                },
            };
            let options = riffle_harness::load::LoadOptions {
                profile,
                duration: Duration::from_secs(duration),
                sources,
                invalid_ratio,
                seed,
                aggregate: !no_aggregate,
                trace_sample_rate,
                drain_timeout: Duration::from_secs(drain_timeout),
                out_dir: out,
                command: std::env::args().collect::<Vec<_>>().join(" "),
                progress: true,
                autoscale: autoscale.then_some((1, max_shards.max(1), shard_capacity)),
                check,
            };
            on_checkout(
                "load",
                |mut pipeline| {
                    if let Some(dir) = state_dir {
                        pipeline.state_dir = dir;
                    }
                    riffle_harness::load::run(&options, pipeline)
                },
                |written| {
                    let checked = written.report.check.as_ref().is_none_or(|c| c.ok);
                    (
                        riffle_harness::load::render(written),
                        written.report.summary.drained && checked,
                    )
                },
            )
            .await
        }
        Command::Demo {
            events,
            rate,
            sources,
            invalid_ratio,
            seed,
            idle_timeout,
            no_aggregate,
            trace_sample_rate,
        } => {
            if !(0.0..=1.0).contains(&invalid_ratio) {
                eprintln!("error: --invalid-ratio must be between 0 and 1");
                return ExitCode::from(2);
            }
            if !(0.0..=1.0).contains(&trace_sample_rate) {
                eprintln!("error: --trace-sample-rate must be between 0 and 1");
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
                trace_sample_rate,
            };
            let source = format!(
                "riffle-dev demo --events {} --rate {}",
                options.events, options.rate
            );
            on_checkout(
                "demo",
                |pipeline| demo::run(&options, pipeline),
                |report| {
                    let mut text = demo::render(report);
                    // The run's figures per event, for `riffle cost`.
                    if let Ok(root) = riffle_plan::project_root() {
                        let path = root.join(riffle_cli::cost::figures::DEMO_FIGURES);
                        match demo::figures(report, &source).write(&path) {
                            Ok(()) => text.push_str(&format!(
                                "figures             {} (riffle cost --rate N prices them)\n",
                                path.display()
                            )),
                            Err(e) => eprintln!("warning: {e}"),
                        }
                    }
                    (text, report.differences.is_empty())
                },
            )
            .await
        }
    }
}

async fn up(
    options: riffle_harness::up::UpOptions,
    state_dir: Option<std::path::PathBuf>,
) -> ExitCode {
    let pipeline = match PipelineOptions::for_checkout("up") {
        Ok(mut p) => {
            if let Some(dir) = state_dir {
                p.state_dir = dir;
            }
            p
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "starting the local twin (state under {})",
        pipeline.state_dir.display()
    );
    // Ctrl-C is how `up` ends: dropping the run stops the children and the emulators.
    tokio::select! {
        r = riffle_harness::up::run(&options, pipeline) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nstopping everything");
            ExitCode::SUCCESS
        }
    }
}

async fn chaos(options: riffle_harness::chaos::ChaosOptions) -> ExitCode {
    if let Err(e) = options.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    on_checkout(
        "chaos",
        |pipeline| riffle_harness::chaos::run(&options, pipeline),
        |report| (riffle_harness::chaos::render(report), report.passed()),
    )
    .await
}

/// Runs `run` on a pipeline of this checkout (state under `.riffle/<name>`), printing its
/// report; exits 1 when `render` says the run failed. Ctrl-C drops the run future: children
/// die with their stdin and kill_on_drop, the emulators with their Drop.
async fn on_checkout<R, F, Fut>(
    name: &str,
    run: F,
    render: impl FnOnce(&R) -> (String, bool),
) -> ExitCode
where
    F: FnOnce(PipelineOptions) -> Fut,
    Fut: std::future::Future<Output = Result<R, riffle_harness::pipeline::PipelineError>>,
{
    let pipeline = match PipelineOptions::for_checkout(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = tokio::select! {
        r = run(pipeline) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted; stopping everything");
            return ExitCode::from(130);
        }
    };
    match outcome {
        Ok(report) => {
            let (text, passed) = render(&report);
            print!("{text}");
            if passed {
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

async fn coldstart(options: riffle_harness::coldstart::ColdStartOptions) -> ExitCode {
    let pipeline = match PipelineOptions::for_checkout("coldstart") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match riffle_harness::coldstart::run(&options, pipeline).await {
        Ok(results) => {
            print!(
                "{}",
                riffle_harness::coldstart::render(&results, !cfg!(debug_assertions))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `KEY=VALUE` for `--env`.
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
