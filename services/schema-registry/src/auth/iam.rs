//! `iam` mode: the caller is the IAM principal that the function URL (AuthType `AWS_IAM`)
//! authenticated, read from the request context lambda_http attaches to each request
//! (`requestContext.authorizer.iam.userArn`), and its role comes from lists of principals.
//!
//! Roles, highest first (a principal in several lists gets the highest, plus its grants):
//! - admin (`RIFFLE_REGISTRY_ADMINS`): everything;
//! - writer (`RIFFLE_REGISTRY_WRITERS`): reads, and registers under any subject;
//! - subject writer (`RIFFLE_REGISTRY_SUBJECT_WRITERS`): reads, and registers under its
//!   granted subjects only;
//! - reader (`RIFFLE_REGISTRY_READERS`): reads (GET, HEAD, the lookup, compatibility checks).
//!
//! Deleting and setting compatibility levels (global or per subject) are for admins: a
//! writer's registrations pass the subject's level, so a writer that could set the level
//! could switch off the check its own registrations answer to.
//!
//! Principals are named by ARN, so the account is always part of the match:
//! - `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`: the role, however it is assumed;
//! - `arn:PARTITION:sts::ACCOUNT:assumed-role/NAME` (or `.../NAME/*`): the same role, in the
//!   form `aws sts get-caller-identity` prints; a specific session is refused, as sessions
//!   are not told apart;
//! - `arn:PARTITION:iam::ACCOUNT:user/[PATH/]NAME`: an IAM user.
//!
//! NAME may end in `*`, a prefix (`role/riffle-dev-validator-Role-*` is every role CloudFormation
//! names for the `Role` of a stack called `riffle-dev-validator`); `*` nowhere else. The path is
//! ignored: a caller's assumed-role ARN does not carry it, and a name is unique within its
//! account whatever the path. Names compare without regard to ASCII case, as IAM keeps them
//! unique that way. Root, federated users and other principals match no entry.
//!
//! Syntax: the three role lists are ARNs separated by `,`; the grants are
//! `ARN=SUBJECT[|SUBJECT...]` separated by `;`, split at the last `=` (IAM names may contain
//! `=`, subjects given here may not, nor `|` or `;`). Blanks around separators are ignored.

use std::fmt;

use crate::error::{Error, Result};
use crate::registry::MAX_SUBJECT_BYTES;

/// Admins: every operation.
pub const ADMINS_ENV: &str = "RIFFLE_REGISTRY_ADMINS";
/// Writers: register under any subject.
pub const WRITERS_ENV: &str = "RIFFLE_REGISTRY_WRITERS";
/// Readers (in `iam` mode; in `basic` and `bearer` it lists read-only users or tokens).
pub const READERS_ENV: &str = "RIFFLE_REGISTRY_READERS";
/// Per-subject registration grants.
pub const SUBJECT_WRITERS_ENV: &str = "RIFFLE_REGISTRY_SUBJECT_WRITERS";

/// What a request asks to do, as the role lists see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GET and HEAD, the lookup and the compatibility checks.
    Read,
    /// A new version under the subject (`POST /subjects/{subject}/versions`).
    Register(String),
    /// Anything else: deletes, compatibility levels, and routes that do not exist.
    Manage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Role,
    User,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::User => "user",
        }
    }
}

/// An IAM role or user, as the lists compare them: partition, account, kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    partition: String,
    account: String,
    kind: Kind,
    name: String,
}

impl Principal {
    /// The principal a caller ARN names: `arn:P:sts::A:assumed-role/NAME/SESSION` (every
    /// role, a Lambda function's included, calls in this form), or an IAM role or user ARN.
    /// `None` for anything else (root, a federated user, not an ARN).
    pub fn from_caller_arn(text: &str) -> Option<Principal> {
        let arn = Arn::parse(text)?;
        let segments: Vec<&str> = arn.resource.split('/').collect();
        let (kind, name) = match (arn.service, segments.as_slice()) {
            ("sts", ["assumed-role", name, session]) if !session.is_empty() => (Kind::Role, *name),
            ("iam", ["role", .., name]) => (Kind::Role, *name),
            ("iam", ["user", .., name]) => (Kind::User, *name),
            _ => return None,
        };
        if name.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(Principal {
            partition: arn.partition.to_owned(),
            account: arn.account.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }
}

/// The IAM form, the one to put in the lists (the path left out: it is not known).
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:{}/{}",
            self.partition,
            self.account,
            self.kind.as_str(),
            self.name
        )
    }
}

/// The parts of an ARN the lists look at.
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    account: &'a str,
    resource: &'a str,
}

impl<'a> Arn<'a> {
    /// `arn:PARTITION:SERVICE::ACCOUNT:RESOURCE`, IAM's shape: no region, a 12-digit account.
    fn parse(text: &'a str) -> Option<Arn<'a>> {
        let mut parts = text.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let partition_ok = !partition.is_empty()
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        (partition_ok && account_ok).then_some(Arn {
            partition,
            service,
            account,
            resource,
        })
    }
}

/// One entry of a list: a role or user, by exact name or by name prefix (`NAME*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    partition: String,
    account: String,
    kind: Kind,
    /// Without the trailing `*` of a prefix.
    name: String,
    prefix: bool,
}

impl Pattern {
    /// One entry as the module docs describe it; the error says what is wrong with it.
    fn parse(text: &str) -> Result<Pattern, String> {
        let arn = Arn::parse(text).ok_or_else(|| {
            format!(
                "'{text}' is not an IAM ARN (arn:PARTITION:iam::ACCOUNT:role/NAME, \
                 arn:PARTITION:sts::ACCOUNT:assumed-role/NAME or arn:PARTITION:iam::ACCOUNT:user/NAME)"
            )
        })?;
        let segments: Vec<&str> = arn.resource.split('/').collect();
        // (kind, path, name): the path only to check, as matching ignores it.
        let (kind, path, name) = match (arn.service, segments.as_slice()) {
            ("iam", ["role", path @ .., name]) => (Kind::Role, path, *name),
            ("iam", ["user", path @ .., name]) => (Kind::User, path, *name),
            ("sts", ["assumed-role", name]) | ("sts", ["assumed-role", name, "*"]) => {
                (Kind::Role, &[][..], *name)
            }
            ("sts", ["assumed-role", _, _]) => {
                return Err(format!(
                    "'{text}' names one session; sessions are not told apart: grant the role \
                     (.../assumed-role/NAME or arn:PARTITION:iam::ACCOUNT:role/NAME)"
                ));
            }
            _ => return Err(format!("'{text}' is no role, assumed role or user ARN")),
        };
        if path.iter().any(|s| s.is_empty() || s.contains('*')) {
            return Err(format!(
                "'{text}': empty path segment, or '*' outside the name"
            ));
        }
        let (name, prefix) = match name.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (name, false),
        };
        let valid_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if (name.is_empty() && !prefix) || !name.chars().all(valid_char) {
            return Err(format!(
                "'{text}': a name is letters, digits and +=,.@_- , with '*' only at its end"
            ));
        }
        Ok(Pattern {
            partition: arn.partition.to_owned(),
            account: arn.account.to_owned(),
            kind,
            name: name.to_owned(),
            prefix,
        })
    }

    fn matches(&self, principal: &Principal) -> bool {
        if self.partition != principal.partition
            || self.account != principal.account
            || self.kind != principal.kind
        {
            return false;
        }
        let (given, wanted) = (principal.name.as_bytes(), self.name.as_bytes());
        if self.prefix {
            given
                .get(..wanted.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(wanted))
        } else {
            given.eq_ignore_ascii_case(wanted)
        }
    }
}

/// A principal that may register under these subjects (and read everything).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    principal: Pattern,
    subjects: Vec<String>,
}

/// Who holds which role; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    admins: Vec<Pattern>,
    writers: Vec<Pattern>,
    readers: Vec<Pattern>,
    grants: Vec<Grant>,
}

impl Rules {
    /// Reads the four lists through `var`. An unset or blank list is empty; all four empty is
    /// refused, as it would refuse every call.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Rules> {
        let list = |name: &str| -> Result<Vec<Pattern>> {
            var(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|entry| {
                    Pattern::parse(entry).map_err(|e| Error::Config(format!("{name}: {e}")))
                })
                .collect()
        };
        let rules = Rules {
            admins: list(ADMINS_ENV)?,
            writers: list(WRITERS_ENV)?,
            readers: list(READERS_ENV)?,
            grants: parse_grants(&var(SUBJECT_WRITERS_ENV).unwrap_or_default())?,
        };
        if rules.admins.is_empty()
            && rules.writers.is_empty()
            && rules.readers.is_empty()
            && rules.grants.is_empty()
        {
            return Err(Error::Config(format!(
                "RIFFLE_REGISTRY_AUTH=iam grants nobody: set {ADMINS_ENV}, {WRITERS_ENV}, \
                 {READERS_ENV} or {SUBJECT_WRITERS_ENV}"
            )));
        }
        Ok(rules)
    }

    /// How many entries each list holds, for logs.
    pub fn summary(&self) -> String {
        format!(
            "{} admins, {} writers, {} readers, {} subject grants",
            self.admins.len(),
            self.writers.len(),
            self.readers.len(),
            self.grants.len()
        )
    }

    /// Whether the caller named by `caller_arn` may do `action`. No caller at all is 401
    /// (nobody vouched for the request); a caller these rules do not cover is 403.
    pub fn authorize(&self, caller_arn: Option<&str>, action: &Action) -> Result<()> {
        let Some(arn) = caller_arn else {
            return Err(Error::NoIamCaller);
        };
        let Some(principal) = Principal::from_caller_arn(arn) else {
            return Err(Error::PrincipalNotGranted(arn.to_owned()));
        };
        let listed = |list: &[Pattern]| list.iter().any(|p| p.matches(&principal));
        if listed(&self.admins) {
            return Ok(());
        }
        let writer = listed(&self.writers);
        let mut grants = self
            .grants
            .iter()
            .filter(|g| g.principal.matches(&principal))
            .peekable();
        let role = if writer {
            "writer"
        } else if grants.peek().is_some() {
            "subject writer"
        } else if listed(&self.readers) {
            "reader"
        } else {
            return Err(Error::PrincipalNotGranted(principal.to_string()));
        };
        match action {
            Action::Read => Ok(()),
            Action::Register(subject) => {
                if writer || grants.any(|g| g.subjects.iter().any(|s| s == subject)) {
                    Ok(())
                } else {
                    Err(Error::SubjectNotGranted {
                        principal: principal.to_string(),
                        subject: subject.clone(),
                    })
                }
            }
            Action::Manage => Err(Error::AdminOnly {
                principal: principal.to_string(),
                role,
            }),
        }
    }
}

/// `ARN=SUBJECT[|SUBJECT...][;...]`, split at each grant's last `=`.
fn parse_grants(text: &str) -> Result<Vec<Grant>> {
    let bad = |message: String| Error::Config(format!("{SUBJECT_WRITERS_ENV}: {message}"));
    text.split(';')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|grant| {
            let (principal, subjects) = grant
                .rsplit_once('=')
                .ok_or_else(|| bad(format!("'{grant}' is not ARN=SUBJECT[|SUBJECT...]")))?;
            let principal = Pattern::parse(principal.trim()).map_err(bad)?;
            let subjects: Vec<String> = subjects
                .split('|')
                .map(str::trim)
                .map(str::to_owned)
                .collect();
            if let Some(s) = subjects
                .iter()
                .find(|s| s.is_empty() || s.len() > MAX_SUBJECT_BYTES)
            {
                return Err(bad(format!(
                    "'{grant}': subject '{s}' is empty or longer than {MAX_SUBJECT_BYTES} bytes"
                )));
            }
            Ok(Grant {
                principal,
                subjects,
            })
        })
        .collect()
}

pub use riffle_http::caller_arn;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn rules(pairs: &[(&str, &str)]) -> Result<Rules> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Rules::from_lookup(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    fn role(name: &str) -> String {
        format!("arn:aws:iam::{ACCOUNT}:role/{name}")
    }

    fn session(name: &str) -> String {
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{name}/session-1")
    }

    #[test]
    fn caller_arns_name_their_role_or_user() {
        let p = |arn: &str| Principal::from_caller_arn(arn).map(|p| p.to_string());
        // Every role calls as an STS session; the session (and the unknown path) drop out.
        assert_eq!(
            p(&session("riffle-validator-Role-1AB2")),
            Some(role("riffle-validator-Role-1AB2"))
        );
        assert_eq!(p(&role("ops/Admin")), Some(role("Admin")));
        assert_eq!(
            p("arn:aws-cn:iam::123456789012:user/dev/alice"),
            Some("arn:aws-cn:iam::123456789012:user/alice".into())
        );
        for other in [
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:assumed-role/NoSession",
            "arn:aws:sts::123456789012:assumed-role/R/",
            "arn:aws:iam::12345678901:role/ShortAccount",
            "arn:aws:iam:eu-west-1:123456789012:role/Regional",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:s3:::bucket",
            "AROAEXAMPLE:session",
            "",
        ] {
            assert_eq!(p(other), None, "{other}");
        }
    }

    #[test]
    fn patterns_match_by_account_kind_and_name() {
        let matches = |pattern: &str, caller: &str| {
            Pattern::parse(pattern)
                .unwrap()
                .matches(&Principal::from_caller_arn(caller).unwrap())
        };
        // The IAM role ARN (path ignored) and the STS form (with or without `/*`) alike.
        for pattern in [
            role("Deployer"),
            role("service/ci/Deployer"),
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer"),
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/*"),
            role("deployer"),
            role("Deploy*"),
            role("*"),
        ] {
            assert!(matches(&pattern, &session("Deployer")), "{pattern}");
            assert!(matches(&pattern, &role("Deployer")), "{pattern}");
        }
        for pattern in [
            role("Deployer2"),
            role("Deploy"),
            "arn:aws:iam::999999999999:role/Deployer".into(),
            "arn:aws-us-gov:iam::123456789012:role/Deployer".into(),
            format!("arn:aws:iam::{ACCOUNT}:user/Deployer"),
        ] {
            assert!(!matches(&pattern, &session("Deployer")), "{pattern}");
        }
        assert!(matches(
            &format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            &format!("arn:aws:iam::{ACCOUNT}:user/team/alice")
        ));
        assert!(!matches(
            &format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            &session("alice")
        ));
    }

    #[test]
    fn malformed_patterns_are_refused_with_their_reason() {
        for (bad, why) in [
            ("Deployer", "not an IAM ARN"),
            ("arn:aws:iam::123:role/Deployer", "not an IAM ARN"),
            (
                "arn:aws:sts::123456789012:assumed-role/Deployer/alice",
                "sessions are not told apart",
            ),
            ("arn:aws:iam::123456789012:root", "no role"),
            ("arn:aws:iam::123456789012:group/ops", "no role"),
            (
                "arn:aws:iam::123456789012:role/ops*/Deployer",
                "outside the name",
            ),
            (
                "arn:aws:iam::123456789012:role/De*ployer",
                "only at its end",
            ),
            ("arn:aws:iam::123456789012:role/", "only at its end"),
            (
                "arn:aws:iam::123456789012:role/has space",
                "only at its end",
            ),
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn lists_and_grants_from_the_environment() {
        let r = rules(&[
            (
                ADMINS_ENV,
                &format!(" {} , {} ", role("Admin"), role("Ops*")),
            ),
            (
                SUBJECT_WRITERS_ENV,
                &format!(
                    "{}=com.riffle.pipeline.Envelope ; {} = a.B | c.D ;",
                    role("riffle-validator-Role-*"),
                    role("odd=name")
                ),
            ),
        ])
        .unwrap();
        assert_eq!(r.admins.len(), 2);
        assert!(r.writers.is_empty() && r.readers.is_empty());
        assert_eq!(r.grants.len(), 2);
        assert_eq!(r.grants[0].subjects, ["com.riffle.pipeline.Envelope"]);
        // Split at the last `=`: IAM names may hold one.
        assert_eq!(r.grants[1].principal.name, "odd=name");
        assert_eq!(r.grants[1].subjects, ["a.B", "c.D"]);
        assert_eq!(
            r.summary(),
            "2 admins, 0 writers, 0 readers, 2 subject grants"
        );
    }

    #[test]
    fn bad_lists_and_grants_are_refused() {
        for bad in [
            vec![],
            vec![(ADMINS_ENV, " , ")],
            vec![(WRITERS_ENV, "arn:aws:iam::123456789012:role/a,b")],
            vec![(SUBJECT_WRITERS_ENV, "arn:aws:iam::123456789012:role/a")],
            vec![(SUBJECT_WRITERS_ENV, "arn:aws:iam::123456789012:role/a=")],
            vec![(SUBJECT_WRITERS_ENV, "arn:aws:iam::123456789012:role/a=s||t")],
            vec![(SUBJECT_WRITERS_ENV, "riffle-validator=s")],
        ] {
            assert!(matches!(rules(&bad), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn roles_decide_what_a_caller_may_do() {
        let r = rules(&[
            (ADMINS_ENV, &role("Admin")),
            (WRITERS_ENV, &role("Ci")),
            (READERS_ENV, &role("Dashboard")),
            (SUBJECT_WRITERS_ENV, &format!("{}=env|other", role("Stage"))),
        ])
        .unwrap();
        let may = |caller: &str, action: &Action| r.authorize(Some(&session(caller)), action);
        let register = |s: &str| Action::Register(s.to_owned());
        for action in [Action::Read, register("env"), register("x"), Action::Manage] {
            assert!(may("Admin", &action).is_ok(), "{action:?}");
        }
        assert!(may("Ci", &register("x")).is_ok());
        assert!(matches!(
            may("Ci", &Action::Manage),
            Err(Error::AdminOnly { role: "writer", .. })
        ));
        assert!(may("Stage", &Action::Read).is_ok());
        assert!(may("Stage", &register("other")).is_ok());
        let err = may("Stage", &register("orders")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Forbidden: principal {} may not register schemas under subject 'orders'",
                role("Stage")
            )
        );
        assert!(may("Dashboard", &Action::Read).is_ok());
        assert!(matches!(
            may("Dashboard", &register("env")),
            Err(Error::SubjectNotGranted { .. })
        ));
        assert!(matches!(
            may("Dashboard", &Action::Manage),
            Err(Error::AdminOnly { role: "reader", .. })
        ));
        let err = may("Stranger", &Action::Read).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Forbidden: principal {} is granted no access to this registry",
                role("Stranger")
            )
        );
        // A principal the lists cannot name is refused by its ARN; no caller is a 401.
        let root = "arn:aws:iam::123456789012:root";
        assert!(matches!(
            r.authorize(Some(root), &Action::Read),
            Err(Error::PrincipalNotGranted(p)) if p == root
        ));
        assert!(matches!(
            r.authorize(None, &Action::Read),
            Err(Error::NoIamCaller)
        ));
    }
}
