//! A service's function code: the zip `make package` built, its content-addressed S3 key,
//! and the `CodeS3Bucket`/`CodeS3Key` parameters a change set gets.
//!
//! The key is the zip's SHA-256 (`<service>/<sha256>.zip`): the same build gives the same key,
//! so an unchanged function is not updated, and a new build changes the parameter and with it
//! the function. [`code_params`] is the pure decision; [`upload`] the S3 side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::DeployError;
use super::params::ParamValue;

/// The architecture the service templates run (`Architectures: [arm64]`).
pub const ZIP_ARCH: &str = "arm64";
/// The bucket a plan names when it has none (a plan uploads nothing and executes nothing).
pub const PLACEHOLDER_BUCKET: &str = "riffle-plan-no-code-bucket";

/// Where `make package` writes a service's zip.
pub fn zip_path(root: &Path, service: &str) -> PathBuf {
    root.join("target")
        .join("lambda")
        .join(ZIP_ARCH)
        .join(format!("{service}.zip"))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The object key of a zip with this digest.
pub fn code_key(service: &str, sha256: &str) -> String {
    format!("{service}/{sha256}.zip")
}

/// The key a plan names when there is no zip.
pub fn placeholder_key(service: &str) -> String {
    format!("{service}/no-zip-run-make-package.zip")
}

/// The zip, read, if it is there.
///
/// # Errors
/// It exists and cannot be read.
pub fn read_zip(path: &Path) -> Result<Option<Vec<u8>>, DeployError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeployError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What a service stack's code parameters come from.
#[derive(Debug, Clone, Copy)]
pub struct CodeInput<'a> {
    /// The service.
    pub service: &'a str,
    /// Its stack (for errors).
    pub stack: &'a str,
    /// `--code-bucket`, or `--param CodeS3Bucket=`.
    pub bucket: Option<&'a str>,
    /// The zip's SHA-256, when it was built.
    pub zip_sha256: Option<&'a str>,
    /// Where the zip was looked for.
    pub zip_path: &'a Path,
    /// The stack exists (an update).
    pub exists: bool,
    /// `--plan`.
    pub plan: bool,
}

/// The decision about a service's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePlan {
    /// `CodeS3Bucket` and `CodeS3Key`.
    pub params: BTreeMap<String, ParamValue>,
    /// The upload to make first: (bucket, key). Never for a plan.
    pub upload: Option<(String, String)>,
    /// What the operator should know (placeholders, code left as it is).
    pub note: Option<String>,
}

/// The code parameters: a deploy uploads the zip and names it; a plan names it without
/// uploading, or, with no zip, keeps the stack's current code (update) or names a placeholder
/// (create), and says so.
///
/// # Errors
/// A deploy (not a plan) without a bucket or without the zip.
pub fn code_params(c: CodeInput<'_>) -> Result<CodePlan, DeployError> {
    let value = |s: &str| ParamValue::Value(s.to_owned());
    let mut params = BTreeMap::new();
    match (c.plan, c.bucket, c.zip_sha256) {
        (false, None, _) => {
            return Err(DeployError::NoCodeBucket {
                stack: c.stack.to_owned(),
            });
        }
        (false, Some(_), None) => {
            return Err(DeployError::ZipMissing {
                service: c.service.to_owned(),
                path: c.zip_path.to_path_buf(),
            });
        }
        (false, Some(bucket), Some(sha)) => {
            let key = code_key(c.service, sha);
            params.insert("CodeS3Bucket".into(), value(bucket));
            params.insert("CodeS3Key".into(), value(&key));
            return Ok(CodePlan {
                params,
                upload: Some((bucket.to_owned(), key)),
                note: None,
            });
        }
        (true, _, _) => {}
    }
    // A plan from here on.
    let mut note = None;
    let bucket = match c.bucket {
        Some(b) => value(b),
        None if c.exists => ParamValue::UsePrevious,
        None => {
            note = Some(format!(
                "no --code-bucket: planned with bucket {PLACEHOLDER_BUCKET}"
            ));
            value(PLACEHOLDER_BUCKET)
        }
    };
    let key = match c.zip_sha256 {
        Some(sha) => value(&code_key(c.service, sha)),
        None if c.exists => {
            note = Some(format!(
                "no zip at {} (run `make package`): planned with the function's current code",
                c.zip_path.display()
            ));
            ParamValue::UsePrevious
        }
        None => {
            let key = placeholder_key(c.service);
            note = Some(format!(
                "no zip at {} (run `make package`): planned with placeholder key {key}",
                c.zip_path.display()
            ));
            value(&key)
        }
    };
    params.insert("CodeS3Bucket".into(), bucket);
    params.insert("CodeS3Key".into(), key);
    Ok(CodePlan {
        params,
        upload: None,
        note,
    })
}

/// Puts `bytes` at `bucket/key` unless an object is there already (the key is the content's
/// digest, so it is the same zip). Returns whether it uploaded.
///
/// # Errors
/// The bucket cannot be read or written.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: Vec<u8>,
) -> Result<bool, DeployError> {
    let place = format!("s3://{bucket}/{key}");
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => return Ok(false),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => return Err(super::aws_error("HeadObject", &place, e)),
    }
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(bytes.into())
        .send()
        .await
        .map_err(|e| super::aws_error("PutObject", &place, e))?;
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input(
        plan: bool,
        bucket: Option<&'static str>,
        sha: Option<&'static str>,
        exists: bool,
    ) -> CodeInput<'static> {
        CodeInput {
            service: "validator",
            stack: "riffle-dev-validator",
            bucket,
            zip_sha256: sha,
            zip_path: Path::new("target/lambda/arm64/validator.zip"),
            exists,
            plan,
        }
    }

    fn v(s: &str) -> ParamValue {
        ParamValue::Value(s.into())
    }

    #[test]
    fn the_key_is_the_zips_digest() {
        let sha = sha256_hex(b"abc");
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(code_key("validator", &sha), format!("validator/{sha}.zip"));
        assert_eq!(
            zip_path(Path::new("/r"), "validator"),
            Path::new("/r/target/lambda/arm64/validator.zip")
        );
    }

    #[test]
    fn a_deploy_uploads_and_names_the_zip() {
        let plan = code_params(input(false, Some("code"), Some("ab12"), true)).unwrap();
        assert_eq!(
            plan.upload,
            Some(("code".into(), "validator/ab12.zip".into()))
        );
        assert_eq!(plan.params["CodeS3Bucket"], v("code"));
        assert_eq!(plan.params["CodeS3Key"], v("validator/ab12.zip"));
        assert_eq!(plan.note, None);
    }

    #[test]
    fn a_deploy_needs_a_bucket_and_a_zip() {
        let err = code_params(input(false, None, Some("ab12"), true)).unwrap_err();
        assert!(err.to_string().contains("pass --code-bucket"), "{err}");
        let err = code_params(input(false, Some("code"), None, true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no zip for validator at target/lambda/arm64/validator.zip: run `make package` first"
        );
    }

    #[test]
    fn a_plan_never_uploads_and_says_what_it_assumed() {
        let plan = code_params(input(true, Some("code"), Some("ab12"), false)).unwrap();
        assert_eq!(plan.upload, None);
        assert_eq!(plan.params["CodeS3Key"], v("validator/ab12.zip"));

        // No zip, new stack: a placeholder, said.
        let plan = code_params(input(true, None, None, false)).unwrap();
        assert_eq!(plan.params["CodeS3Bucket"], v(PLACEHOLDER_BUCKET));
        assert_eq!(
            plan.params["CodeS3Key"],
            v("validator/no-zip-run-make-package.zip")
        );
        assert!(plan.note.unwrap().contains("placeholder key"));

        // No zip, existing stack: the current code, said.
        let plan = code_params(input(true, None, None, true)).unwrap();
        assert_eq!(plan.params["CodeS3Bucket"], ParamValue::UsePrevious);
        assert_eq!(plan.params["CodeS3Key"], ParamValue::UsePrevious);
        assert!(plan.note.unwrap().contains("current code"));
    }
}
