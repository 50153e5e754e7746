//! `riffle schema` as a person or CI runs it: the real `riffle` binary against a real
//! registry. register/check/list/diff talk to a registry served in-process on loopback (the
//! in-memory store, open or behind basic auth); `gate` starts its own emulators and
//! `schema-registry` process and replays a scratch git repository's history.
//!
//! Needs the binaries (`cargo build --workspace --bins`, which `make test` does) and, for the
//! gate, the emulators (`make install`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use riffle_schema_registry::auth::Auth;
use riffle_schema_registry::{MemoryStore, Registry, router, router_with_auth};
use riffle_tests::test_support;
use serde_json::Value;

const ORDER_SUBJECT: &str = "com.riffle.shop.OrderPlaced";
const ORDER_FILE: &str = "schemas/events/order_placed.avsc";

fn riffle() -> PathBuf {
    let path = riffle_harness::pipeline::bin_dir().join("riffle");
    assert!(
        path.is_file(),
        "{} not found: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

fn project() -> PathBuf {
    riffle_local::project_root().unwrap()
}

/// Runs `riffle args...` in `dir` with `env`, credentials from the caller's shell removed.
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::process::Command::new(riffle())
        .args(args)
        .current_dir(dir)
        .env_remove("RIFFLE_REGISTRY_URL")
        .env_remove("RIFFLE_REGISTRY_USER")
        .env_remove("RIFFLE_REGISTRY_PASSWORD")
        .env_remove("RIFFLE_REGISTRY_TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let out = String::from_utf8(stdout).unwrap();
    let err = String::from_utf8(stderr).unwrap();
    (status.code().unwrap_or(-1), out, err)
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// An open in-memory registry held to BACKWARD, as the service runs by default.
async fn registry() -> String {
    let url = serve(router(Registry::new(MemoryStore::new()))).await;
    riffle_registry_client::RegistryClient::new(&url)
        .unwrap()
        .set_config(None, riffle_registry_client::CompatibilityLevel::Backward)
        .await
        .unwrap();
    url
}

/// The order schema with `edit` applied to its JSON, written to `dir/name`.
fn edited_order(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<Value>)) -> PathBuf {
    let text = std::fs::read_to_string(project().join(ORDER_FILE)).unwrap();
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    edit(schema["fields"].as_array_mut().unwrap());
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&schema).unwrap()).unwrap();
    path
}

fn add_required_field(fields: &mut Vec<Value>) {
    fields.push(serde_json::json!({"name": "loyalty_tier", "type": "string"}));
}

fn add_optional_field(fields: &mut Vec<Value>) {
    fields.push(serde_json::json!(
        {"name": "gift_note", "type": ["null", "string"], "default": null}
    ));
}

fn change_quantity_type(fields: &mut Vec<Value>) {
    for f in fields {
        if f["name"] == "quantity" {
            f["type"] = "string".into();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_check_and_diff() {
    let url = registry().await;
    let root = project();
    let reg = ["--registry", url.as_str()];

    // Default files: the events and the envelope, under their record names.
    let (code, out, err) = run(&root, &[&["schema", "register"][..], &reg].concat(), &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    for subject in [
        ORDER_SUBJECT,
        "com.riffle.web.PageView",
        "com.riffle.iot.SensorReading",
        "com.riffle.pipeline.Envelope",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(subject) && l.contains("version 1  id ")),
            "{subject} registered: {out}"
        );
    }
    assert!(!out.contains("com.riffle.view.ViewRow"), "{out}");

    // Registering again changes nothing; the URL may come from the environment.
    let (code, again, err) = run(
        &root,
        &["schema", "register"],
        &[("RIFFLE_REGISTRY_URL", url.as_str())],
    )
    .await;
    assert_eq!((code, again.as_str()), (0, out.as_str()), "{err}");

    let (code, out, err) = run(&root, &[&["schema", "list"][..], &reg].concat(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{ORDER_SUBJECT}  (BACKWARD)")),
        "{out}"
    );
    assert!(out.contains("  version 1  id "), "{out}");
    // The contract went with the schema (schemas/rules/), and the envelope has none.
    assert!(
        out.contains(
            "contract: 7 field rules, skew 3600 s, key orders:category={category}, window 60 s"
        ),
        "{out}"
    );
    assert!(out.contains("no contract"), "{out}");

    let scratch = test_support::state_dir("schema-cli-files");
    let required = edited_order(&scratch, "required.avsc", add_required_field);
    let optional = edited_order(&scratch, "optional.avsc", add_optional_field);
    let (r, o) = (required.to_str().unwrap(), optional.to_str().unwrap());

    let (code, out, err) = run(&root, &[&["schema", "check", o][..], &reg].concat(), &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("ok    {ORDER_SUBJECT}")), "{out}");

    let (code, out, err) = run(&root, &[&["schema", "check", o, r][..], &reg].concat(), &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("FAIL  {ORDER_SUBJECT}")), "{out}");
    assert!(
        out.contains("loyalty_tier"),
        "the failing field is named: {out}"
    );

    // A refused registration exits 1; the compatible one then becomes version 2.
    let (code, out, _) = run(&root, &[&["schema", "register", r][..], &reg].concat(), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("REFUSED") && out.contains("loyalty_tier"),
        "{out}"
    );
    let (code, out, err) = run(&root, &[&["schema", "register", o][..], &reg].concat(), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");

    let (code, out, err) = run(
        &root,
        &[
            &[
                "schema",
                "diff",
                ORDER_SUBJECT,
                "--version",
                "2",
                "--against",
                "1",
            ][..],
            &reg,
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("+ added    gift_note: null | string (default null)"),
        "{out}"
    );
    let changed = edited_order(&scratch, "changed.avsc", change_quantity_type);
    let (code, out, err) = run(
        &root,
        &[
            &[
                "schema",
                "diff",
                ORDER_SUBJECT,
                "--file",
                changed.to_str().unwrap(),
            ][..],
            &reg,
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("~ type     quantity: int -> string"), "{out}");
    assert!(out.contains("- removed  gift_note"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_and_where_without_panicking() {
    let root = project();
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let (code, out, err) = run(&root, &["schema", "list", "--registry", &down], &[]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&down), "says where it tried: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let (code, _, err) = run(&root, &["schema", "check"], &[]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("--registry") && err.contains("RIFFLE_REGISTRY_URL"),
        "{err}"
    );

    let url = registry().await;
    let (code, _, err) = run(
        &root,
        &["schema", "check", "--registry", &url, "no/such/file.avsc"],
        &[],
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.avsc"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_environment() {
    let auth = Auth::basic(vec![("ci".into(), "s3cret".into())]);
    let url = serve(router_with_auth(Registry::new(MemoryStore::new()), auth)).await;
    let root = project();
    let args = ["schema", "register", "--registry", url.as_str(), ORDER_FILE];

    let (code, _, err) = run(&root, &args, &[]).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("401") && err.contains("RIFFLE_REGISTRY_USER"),
        "{err}"
    );

    let creds = [
        ("RIFFLE_REGISTRY_USER", "ci"),
        ("RIFFLE_REGISTRY_PASSWORD", "s3cret"),
    ];
    let (code, out, err) = run(&root, &args, &creds).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(ORDER_SUBJECT), "{out}");
}

/// A scratch git repository holding a copy of the project's `schemas/`, committed once.
fn scratch_repo(name: &str) -> PathBuf {
    let dir = test_support::state_dir(name);
    copy_dir(&project().join("schemas"), &dir.join("schemas"));
    git(&dir, &["init", "-q"]);
    commit_all(&dir, "schemas as in the project");
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=gate test",
            "-c",
            "user.email=gate@test.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn commit_all(dir: &Path, message: &str) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
}

async fn gate(dir: &Path) -> (i32, String, String) {
    // Through the operator binary, which hands harness commands to `riffle-dev`.
    run(dir, &["schema-gate"], &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_fails_on_an_uncommitted_field_without_default() {
    let repo = scratch_repo("schema-gate-pending");
    edited_order(
        &repo.join("schemas/events"),
        "order_placed.avsc",
        add_required_field,
    );
    let (code, out, err) = gate(&repo).await;
    assert_eq!(code, 1, "{out}{err}");
    let fail = out
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("a FAIL line: {out}"));
    assert!(fail.contains(ORDER_SUBJECT), "{out}");
    assert!(out.contains("loyalty_tier"), "{out}");
    assert!(out.contains("INCOMPATIBLE"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_fails_on_a_committed_type_change() {
    let repo = scratch_repo("schema-gate-committed");
    edited_order(
        &repo.join("schemas/events"),
        "order_placed.avsc",
        change_quantity_type,
    );
    commit_all(&repo, "quantity as a string");
    let (code, out, err) = gate(&repo).await;
    assert_eq!(code, 1, "{out}{err}");
    let history_fail = out
        .lines()
        .find(|l| l.contains("FAIL") && l.contains("order_placed.avsc"))
        .unwrap_or_else(|| panic!("the commit is named: {out}"));
    assert!(history_fail.contains(ORDER_SUBJECT), "{out}");
    assert!(out.contains("quantity: int -> string"), "{out}");
}

/// A contract is registered with its schema (ADR 0020), so a stricter rule committed to
/// `schemas/rules/` is a breaking change the gate names, though no schema changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_fails_on_a_committed_contract_tightening() {
    let repo = scratch_repo("schema-gate-contract");
    let rules = repo.join(format!("schemas/rules/{ORDER_SUBJECT}.json"));
    let text = std::fs::read_to_string(&rules).unwrap();
    let tighter = text.replace(
        r#""quantity": { "min": 1, "max": 100 }"#,
        r#""quantity": { "min": 1, "max": 50 }"#,
    );
    assert_ne!(tighter, text);
    std::fs::write(&rules, tighter).unwrap();
    commit_all(&repo, "at most 50 per order");
    let (code, out, err) = gate(&repo).await;
    assert_eq!(code, 1, "{out}{err}");
    let fail = out
        .lines()
        .find(|l| l.contains("FAIL") && l.contains("order_placed.avsc"))
        .unwrap_or_else(|| panic!("the commit is named: {out}"));
    assert!(fail.contains(ORDER_SUBJECT), "{out}");
    assert!(out.contains("field quantity: max lowered to 50"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_passes_an_optional_field_with_default() {
    let repo = scratch_repo("schema-gate-compatible");
    // One compatible change committed, one more pending: history and tree both replayed.
    edited_order(
        &repo.join("schemas/events"),
        "order_placed.avsc",
        add_optional_field,
    );
    commit_all(&repo, "gift note");
    edited_order(
        &repo.join("schemas/events"),
        "order_placed.avsc",
        |fields| {
            add_optional_field(fields);
            fields.push(serde_json::json!({"name": "channel", "type": "string", "default": "web"}));
        },
    );
    let (code, out, err) = gate(&repo).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("ok") && l.contains("order_placed.avsc"))
            .count(),
        3,
        "two committed versions and the working tree: {out}"
    );
    assert!(out.contains("every change is compatible"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitive_levels_check_every_version() {
    use riffle_registry_client::{CompatibilityLevel, RegistryClient};
    let url = registry().await;
    let client = RegistryClient::new(&url).unwrap();
    let schema = |fields: &str| {
        format!(
            r#"{{"type":"record","name":"Probe","namespace":"com.riffle.test","fields":[{fields}]}}"#
        )
    };
    let subject = "com.riffle.test.Probe";
    // v1 has `a` as an int, v2 drops it (backward compatible: readers ignore it).
    client
        .register(subject, &schema(r#"{"name":"a","type":"int"}"#))
        .await
        .unwrap();
    client.register(subject, &schema("")).await.unwrap();
    // `a` comes back as a string with a default: fine against v2, unreadable against v1.
    let dir = test_support::state_dir("schema-cli-transitive");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.avsc");
    std::fs::write(
        &file,
        schema(r#"{"name":"a","type":"string","default":"z"}"#),
    )
    .unwrap();
    let args = [
        "schema",
        "check",
        "--registry",
        url.as_str(),
        file.to_str().unwrap(),
    ];

    let (code, out, err) = run(&project(), &args, &[]).await;
    assert_eq!(
        code, 0,
        "BACKWARD looks at the latest version only: {out}{err}"
    );

    client
        .set_config(Some(subject), CompatibilityLevel::BackwardTransitive)
        .await
        .unwrap();
    let (code, out, err) = run(&project(), &args, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("BACKWARD_TRANSITIVE"), "{out}");
    assert!(out.contains("against version 1:"), "{out}");
    assert!(!out.contains("against version 2:"), "{out}");
}
