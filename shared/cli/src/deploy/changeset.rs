//! Change sets, the pure side: a change set's name, what its status means (ready, "no
//! changes", failed, still being computed) and its changes as a table.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::primitives::{DateTime, DateTimeFormat};

/// Most characters in a change set name.
pub const CHANGE_SET_NAME_MAX: usize = 128;

/// A change set name unique per run: `riffle-` and the UTC time to the millisecond
/// (`riffle-20261206T184200123Z`). Names must start with a letter and hold only letters,
/// digits and hyphens.
pub fn change_set_name(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let stamp = DateTime::from_secs(secs)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default();
    let stamp: String = stamp.chars().filter(char::is_ascii_digit).collect();
    // 20261206184200 -> 20261206T184200, then the milliseconds, fixed width.
    let (date, time) = stamp.split_at(stamp.len().min(8));
    let mut name = format!("riffle-{date}T{time}{:03}Z", since_epoch.subsec_millis());
    name.truncate(CHANGE_SET_NAME_MAX);
    name
}

/// Whether a failed change set (or a refused CreateChangeSet) only means "nothing to change".
/// CloudFormation fails the change set with "The submitted information didn't contain
/// changes..."; some emulators refuse the call with "No updates are to be performed.".
pub fn is_no_changes(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

/// Where a change set is, from its Status and StatusReason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSetState {
    /// CREATE_PENDING / CREATE_IN_PROGRESS: ask again.
    Pending,
    /// CREATE_COMPLETE: ready to show and execute.
    Ready,
    /// FAILED because there is nothing to change.
    NoChanges,
    /// FAILED for any other reason (or a status we do not know): the reason.
    Failed(String),
}

/// Classifies a change set's status.
pub fn change_set_state(status: &str, reason: Option<&str>) -> ChangeSetState {
    match status {
        "CREATE_PENDING" | "CREATE_IN_PROGRESS" => ChangeSetState::Pending,
        "CREATE_COMPLETE" => ChangeSetState::Ready,
        "FAILED" if reason.is_some_and(is_no_changes) => ChangeSetState::NoChanges,
        other => ChangeSetState::Failed(match reason {
            Some(r) => format!("{other}: {r}"),
            None => other.to_owned(),
        }),
    }
}

/// A change set once CloudFormation has finished computing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Ready to execute, with these changes.
    Ready(Vec<Change>),
    /// Nothing to change.
    NoChanges,
    /// Refused: the reason.
    Failed(String),
}

/// One resource change of a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Add, Modify, Remove, Import, Dynamic.
    pub action: String,
    /// The template's logical id.
    pub logical_id: String,
    /// The resource type.
    pub resource_type: String,
    /// For a Modify: True, False or Conditional; `None` where CloudFormation gave none.
    pub replacement: Option<String>,
}

impl Change {
    /// From the SDK's change (non-resource changes, such as hook changes, have no resource
    /// part and are skipped).
    pub fn from_sdk(change: &aws_sdk_cloudformation::types::Change) -> Option<Change> {
        let rc = change.resource_change()?;
        Some(Change {
            action: rc
                .action()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            logical_id: rc.logical_resource_id().unwrap_or_default().to_owned(),
            resource_type: rc.resource_type().unwrap_or_default().to_owned(),
            replacement: rc.replacement().map(|r| r.as_str().to_owned()),
        })
    }

    /// A Modify that replaces (or may replace) the resource: a new physical resource, the old
    /// one deleted, its data with it.
    pub fn replaces(&self) -> bool {
        matches!(self.replacement.as_deref(), Some("True" | "Conditional"))
    }
}

/// The changes as a table, replacements flagged, with a count line.
pub fn render_changes(changes: &[Change]) -> String {
    let header = ["Action", "Logical id", "Type", "Replacement"];
    let rows: Vec<[String; 4]> = changes
        .iter()
        .map(|c| {
            [
                c.action.clone(),
                c.logical_id.clone(),
                c.resource_type.clone(),
                c.replacement.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    let count = |action: &str| changes.iter().filter(|c| c.action == action).count();
    let replaced = changes.iter().filter(|c| c.replaces()).count();
    out.push_str(&format!(
        "  {} to add, {} to modify ({replaced} replaced or maybe replaced), {} to remove\n",
        count("Add"),
        count("Modify"),
        count("Remove")
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_unique_per_millisecond_and_valid() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_582_520_123);
        let name = change_set_name(t);
        assert_eq!(name, "riffle-20261206T184200123Z");
        assert!(name.starts_with(|c: char| c.is_ascii_alphabetic()));
        assert_eq!(
            change_set_name(t + Duration::from_millis(1)),
            "riffle-20261206T184200124Z"
        );
        assert_eq!(
            change_set_name(t + Duration::from_micros(877)),
            "riffle-20261206T184200123Z"
        );
        assert_eq!(
            change_set_name(UNIX_EPOCH + Duration::from_millis(1_796_582_521_007)),
            "riffle-20261206T184201007Z"
        );
    }

    #[test]
    fn no_changes_is_told_apart_from_failure() {
        let aws = "The submitted information didn't contain changes. Submit different information to create a change set.";
        assert_eq!(
            change_set_state("FAILED", Some(aws)),
            ChangeSetState::NoChanges
        );
        assert!(is_no_changes("No updates are to be performed."));
        assert_eq!(
            change_set_state(
                "FAILED",
                Some("Template format error: Unresolved resource dependencies [Nope]")
            ),
            ChangeSetState::Failed(
                "FAILED: Template format error: Unresolved resource dependencies [Nope]".into()
            )
        );
        assert_eq!(
            change_set_state("FAILED", None),
            ChangeSetState::Failed("FAILED".into())
        );
        assert_eq!(
            change_set_state("CREATE_PENDING", None),
            ChangeSetState::Pending
        );
        assert_eq!(
            change_set_state("CREATE_IN_PROGRESS", None),
            ChangeSetState::Pending
        );
        assert_eq!(
            change_set_state("CREATE_COMPLETE", None),
            ChangeSetState::Ready
        );
        assert!(matches!(
            change_set_state("DELETE_COMPLETE", None),
            ChangeSetState::Failed(_)
        ));
    }

    fn change(action: &str, id: &str, kind: &str, replacement: Option<&str>) -> Change {
        Change {
            action: action.into(),
            logical_id: id.into(),
            resource_type: kind.into(),
            replacement: replacement.map(str::to_owned),
        }
    }

    #[test]
    fn sdk_changes_are_read_with_their_replacement() {
        use aws_sdk_cloudformation::types::{
            Change as SdkChange, ChangeAction, ChangeType, Replacement, ResourceChange,
        };
        let sdk = SdkChange::builder()
            .r#type(ChangeType::Resource)
            .resource_change(
                ResourceChange::builder()
                    .action(ChangeAction::Modify)
                    .logical_resource_id("RawStream")
                    .resource_type("AWS::Kinesis::Stream")
                    .replacement(Replacement::Conditional)
                    .build(),
            )
            .build();
        let c = Change::from_sdk(&sdk).unwrap();
        assert_eq!(
            c,
            change(
                "Modify",
                "RawStream",
                "AWS::Kinesis::Stream",
                Some("Conditional")
            )
        );
        assert!(c.replaces());
        assert!(!change("Modify", "Q", "AWS::SQS::Queue", Some("False")).replaces());
        assert_eq!(Change::from_sdk(&SdkChange::builder().build()), None);
    }

    #[test]
    fn changes_render_as_a_table() {
        let table = render_changes(&[
            change("Add", "Topic", "AWS::SNS::Topic", None),
            change("Modify", "Queue", "AWS::SQS::Queue", Some("False")),
            change("Modify", "RawStream", "AWS::Kinesis::Stream", Some("True")),
            change("Remove", "Old", "AWS::SQS::Queue", None),
        ]);
        assert_eq!(
            table,
            "  Action  Logical id  Type                  Replacement
  Add     Topic       AWS::SNS::Topic       -
  Modify  Queue       AWS::SQS::Queue       False
  Modify  RawStream   AWS::Kinesis::Stream  True
  Remove  Old         AWS::SQS::Queue       -
  1 to add, 2 to modify (1 replaced or maybe replaced), 1 to remove
"
        );
    }
}
