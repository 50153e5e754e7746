//! `riffle deploy` against moto's CloudFormation (one moto server, as riffle-local starts it):
//! - a small platform (a queue and a topic) and a service stack that takes its code as the
//!   real ones do: planned (nothing left behind, nothing uploaded), created, updated with a
//!   Modify, deployed again with no change, a new build changing only the code key, and a
//!   failing update ending non-zero through the binary;
//! - `--plan` of the repository's real templates, which moto's CloudFormation accepts, and
//!   two environments' platforms created side by side from the real platform template.
//!
//! What moto does not do, and so is not tested here: resource events (it reports the stack's
//! own only), asynchronous failure and rollback (it refuses a bad resource when the change
//! set is executed), exports of stacks made by change sets (so no service stack importing
//! the platform's can be created on it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use riffle_cli::deploy::{
    Approval, DeployError, EnvName, Outcome, Request, StackReport, code, deploy,
};
use riffle_local::Emulators;

const ENV: &str = "ci";
const CODE_BUCKET: &str = "riffle-ci-code";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/deploy");

/// A fresh state dir per test run under the git-ignored `.riffle/`.
fn state_dir(name: &str) -> PathBuf {
    let dir = riffle_local::project_root()
        .unwrap()
        .join(".riffle/test-state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A checkout-like folder: infra/platform.yaml (one of the fixture's versions),
/// infra/services/echo.yaml and the service's zip where `make package` puts it.
fn workspace(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("infra/services")).unwrap();
    std::fs::copy(
        Path::new(FIXTURES).join("services/echo.yaml"),
        root.join("infra/services/echo.yaml"),
    )
    .unwrap();
    use_platform(&root, "platform.yaml");
    build_zip(&root, b"echo build 1");
    root
}

fn use_platform(root: &Path, fixture: &str) {
    std::fs::copy(
        Path::new(FIXTURES).join(fixture),
        root.join("infra/platform.yaml"),
    )
    .unwrap();
}

fn build_zip(root: &Path, bytes: &[u8]) -> String {
    let path = code::zip_path(root, "echo");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    code::code_key("echo", &code::sha256_hex(bytes))
}

fn request(root: &Path, plan: bool, stacks: &[&str]) -> Request {
    Request {
        env: EnvName::parse(ENV).unwrap(),
        stacks: stacks.iter().map(|s| s.to_string()).collect(),
        plan,
        approval: Approval::Yes,
        params: BTreeMap::new(),
        code_bucket: Some(CODE_BUCKET.into()),
        infra: root.join("infra"),
        root: root.to_path_buf(),
        changeset_timeout: Duration::from_secs(30),
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(50),
    }
}

async fn run(
    sdk: &aws_config::SdkConfig,
    request: &Request,
) -> (Result<Vec<StackReport>, DeployError>, String) {
    let mut printed = String::new();
    let result = deploy(sdk, request, &mut |line| {
        printed.push_str(line);
        printed.push('\n');
    })
    .await;
    (result, printed)
}

fn actions(changes: &[riffle_cli::deploy::Change]) -> Vec<(String, String)> {
    let mut v: Vec<_> = changes
        .iter()
        .map(|c| (c.action.clone(), c.logical_id.clone()))
        .collect();
    v.sort();
    v
}

fn pair(action: &str, id: &str) -> (String, String) {
    (action.into(), id.into())
}

async fn stack_params(
    cfn: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Option<BTreeMap<String, String>> {
    let out = cfn.describe_stacks().stack_name(stack).send().await.ok()?;
    let stack = out.stacks().first()?;
    Some(
        stack
            .parameters()
            .iter()
            .map(|p| {
                (
                    p.parameter_key().unwrap_or_default().to_owned(),
                    p.parameter_value().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

async fn object_exists(s3: &aws_sdk_s3::Client, key: &str) -> bool {
    s3.head_object()
        .bucket(CODE_BUCKET)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_create_update_no_change_and_failure_against_moto() {
    let dir = state_dir("deploy");
    let emulators = Emulators::start(&dir.join("emulators")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let s3 = riffle_aws::s3_client(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    s3.create_bucket().bucket(CODE_BUCKET).send().await.unwrap();
    let root = workspace(&dir);
    let key1 = code::code_key("echo", &code::sha256_hex(b"echo build 1"));

    // Plan: both stacks are new, both show their resources, nothing stays behind.
    let (result, printed) = run(&sdk, &request(&root, true, &[])).await;
    let reports = result.unwrap();
    assert_eq!(reports.len(), 2, "{printed}");
    assert_eq!(reports[0].stack, "riffle-ci-platform");
    assert_eq!(reports[1].stack, "riffle-ci-echo");
    let Outcome::Planned(changes) = &reports[0].outcome else {
        panic!("platform not planned: {reports:?}");
    };
    assert_eq!(
        actions(changes),
        [pair("Add", "Queue"), pair("Add", "Topic")]
    );
    assert!(printed.contains("AWS::SNS::Topic"), "{printed}");
    assert!(printed.contains("(create)"), "{printed}");
    assert!(
        stack_params(&cfn, "riffle-ci-platform").await.is_none(),
        "a plan left its stack"
    );
    assert!(!object_exists(&s3, &key1).await, "a plan uploaded code");

    // Create.
    let (result, printed) = run(&sdk, &request(&root, false, &[])).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    for r in &reports {
        let Outcome::Deployed { status, .. } = &r.outcome else {
            panic!("not deployed: {r:?}");
        };
        assert_eq!(status, "CREATE_COMPLETE");
    }
    assert!(
        printed.contains("CREATE_IN_PROGRESS"),
        "events not printed: {printed}"
    );
    sqs.get_queue_url()
        .queue_name("riffle-ci-deploytest")
        .send()
        .await
        .expect("the platform's queue, named with the environment");
    assert!(object_exists(&s3, &key1).await, "the zip was not uploaded");
    let params = stack_params(&cfn, "riffle-ci-echo").await.unwrap();
    assert_eq!(params["CodeS3Key"], key1);
    assert_eq!(params["CodeS3Bucket"], CODE_BUCKET);
    assert_eq!(params["Env"], ENV);

    // Update: the queue's visibility timeout, a Modify.
    use_platform(&root, "platform-modified.yaml");
    let (result, printed) = run(&sdk, &request(&root, false, &["platform"])).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(reports.len(), 1, "only the platform was asked for");
    let Outcome::Deployed { status, changes } = &reports[0].outcome else {
        panic!("not deployed: {reports:?}");
    };
    assert_eq!(status, "UPDATE_COMPLETE");
    assert!(
        actions(changes).contains(&pair("Modify", "Queue")),
        "{printed}"
    );
    assert!(printed.contains("(update)"), "{printed}");
    let url = sqs
        .get_queue_url()
        .queue_name("riffle-ci-deploytest")
        .send()
        .await
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url.queue_url().unwrap())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout],
        "60"
    );

    // The same again: no changes anywhere (the same zip is the same key), nothing executed.
    let (result, printed) = run(&sdk, &request(&root, false, &[])).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::NoChanges),
        "{reports:?}\n{printed}"
    );
    assert!(
        printed.contains("code: s3://riffle-ci-code/echo/"),
        "{printed}"
    );
    assert!(printed.contains("(already there)"), "{printed}");

    // A new build: a new key, uploaded, and the stack updated to it.
    let key2 = build_zip(&root, b"echo build 2");
    let (result, printed) = run(&sdk, &request(&root, false, &["echo"])).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(
        reports[0].outcome,
        Outcome::NoChanges,
        "platform: {printed}"
    );
    assert!(
        matches!(&reports[1].outcome, Outcome::Deployed { status, .. } if status == "UPDATE_COMPLETE"),
        "{reports:?}"
    );
    assert!(object_exists(&s3, &key2).await);
    let params = stack_params(&cfn, "riffle-ci-echo").await.unwrap();
    assert_eq!(params["CodeS3Key"], key2);
    assert_eq!(params["Timeout"], "60", "a default kept");

    // A failing update, through the binary: non-zero, the failure named. On AWS the resource
    // fails (UPDATE_FAILED, listed) and the stack rolls back; moto refuses the resource when
    // the change set is executed.
    use_platform(&root, "platform-broken.yaml");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["deploy", "--env", ENV, "--yes", "--poll", "50ms", "--infra"])
        .arg(root.join("infra"))
        .arg("platform")
        .envs(emulators.env())
        .env("RIFFLE_ROOT", riffle_local::project_root().unwrap())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a failed update exited 0: {stdout}"
    );
    assert!(stdout.contains("Add     BrokenQueue"), "{stdout}");
    assert!(
        stderr.contains("error: ExecuteChangeSet (riffle-ci-platform)")
            || stderr.contains("failed resources:\n  BrokenQueue"),
        "{stderr}"
    );
    assert!(
        stderr.contains("alphanumeric") || stderr.contains("BrokenQueue"),
        "{stderr}"
    );

    // Without --yes and without a terminal, nothing is changed.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_riffle"))
        .args(["deploy", "--env", ENV, "--infra"])
        .arg(root.join("infra"))
        .envs(emulators.env())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("pass --yes"),
        "{output:?}"
    );

    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `riffle deploy --plan --env dev` over the repository's own templates: every stack planned
/// as a creation with placeholder code (no zips needed), nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_of_the_real_templates_against_moto() {
    let dir = state_dir("deploy-plan");
    let emulators = Emulators::start(&dir.join("emulators")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let repo = riffle_local::project_root().unwrap();
    // An empty root: no zips, whatever `make package` left in this checkout.
    let empty = dir.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let request = Request {
        env: EnvName::parse("dev").unwrap(),
        code_bucket: None,
        infra: repo.join("infra"),
        ..request(&empty, true, &[])
    };
    let (result, printed) = run(&sdk, &request).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(reports[0].stack, "riffle-dev-platform");
    let names: Vec<_> = reports.iter().map(|r| r.stack.as_str()).collect();
    let registry = names
        .iter()
        .position(|n| *n == "riffle-dev-schema-registry");
    let validator = names.iter().position(|n| *n == "riffle-dev-validator");
    assert!(
        registry < validator,
        "the registry exports what the validator imports: {names:?}"
    );
    for r in &reports {
        let Outcome::Planned(changes) = &r.outcome else {
            panic!("not planned: {r:?}");
        };
        assert!(changes.iter().all(|c| c.action == "Add"), "{r:?}");
    }
    assert!(
        printed.contains("placeholder key validator/no-zip-run-make-package.zip"),
        "{printed}"
    );
    // On-demand streams: the same platform with StreamMode=ON_DEMAND (no ShardCount) plans.
    let on_demand = Request {
        env: EnvName::parse("dev").unwrap(),
        code_bucket: None,
        infra: repo.join("infra"),
        params: BTreeMap::from([("StreamMode".to_owned(), "ON_DEMAND".to_owned())]),
        ..self::request(&empty, true, &["platform"])
    };
    let (result, printed) = run(&sdk, &on_demand).await;
    let reports = result.unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert!(
        matches!(&reports[0].outcome, Outcome::Planned(changes) if !changes.is_empty()),
        "{reports:?}"
    );
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    for name in names {
        assert!(
            stack_params(&cfn, name).await.is_none(),
            "{name} left behind"
        );
    }
    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two environments' platforms, created from the repository's real template in one account
/// and region: each stack gets its own `Env`, and the names CloudFormation reports carry it.
/// (On AWS, before ADR 0016, the second platform failed with "already exists"; that the two
/// plans share no name at all is riffle-plan's `two_environments_name_nothing_alike`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_environments_platforms_live_side_by_side() {
    let dir = state_dir("deploy-envs");
    let emulators = Emulators::start(&dir.join("emulators")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let repo = riffle_local::project_root().unwrap();
    let empty = dir.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let mut streams = Vec::new();
    for env in ["dev", "staging"] {
        let request = Request {
            env: EnvName::parse(env).unwrap(),
            code_bucket: None,
            infra: repo.join("infra"),
            ..request(&empty, false, &["platform"])
        };
        let (result, printed) = run(&sdk, &request).await;
        let reports = result.unwrap_or_else(|e| panic!("{env}: {e}\n{printed}"));
        assert_eq!(reports.len(), 1, "{env}: only the platform: {reports:?}");
        let Outcome::Deployed { status, .. } = &reports[0].outcome else {
            panic!("{env}: not deployed: {reports:?}\n{printed}");
        };
        assert_eq!(status, "CREATE_COMPLETE", "{env}\n{printed}");
        let stack = format!("riffle-{env}-platform");
        let params = stack_params(&cfn, &stack).await.unwrap();
        assert_eq!(
            params.get("Env").map(String::as_str),
            Some(env),
            "{params:?}"
        );
        let raw = cfn
            .describe_stack_resource()
            .stack_name(&stack)
            .logical_resource_id("RawStream")
            .send()
            .await
            .unwrap();
        let physical = raw.stack_resource_detail().unwrap().physical_resource_id();
        streams.push(physical.unwrap_or_default().to_owned());
    }
    assert_eq!(streams, ["riffle-dev-raw", "riffle-staging-raw"]);
    emulators.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
