//! Stacks and their events, the pure side: what a stack status means for the next step, which
//! events are new since the last poll, and how an event reads.

use std::collections::{BTreeSet, HashSet};

use aws_sdk_cloudformation::primitives::DateTimeFormat;

/// A stack as found before its change set is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// No such stack (or only a deleted one): a CREATE change set.
    Absent,
    /// REVIEW_IN_PROGRESS: made by a CREATE change set never executed; still a CREATE.
    Review,
    /// A stack that can take an UPDATE change set, with its current parameters.
    Ready {
        /// Its parameters' names (each can keep its value with UsePreviousValue).
        params: BTreeSet<String>,
    },
    /// A stack no change set can be made for now.
    Blocked {
        /// Its status.
        status: String,
        /// What to do.
        advice: String,
    },
}

impl Existing {
    /// Whether the change set creates the stack.
    pub fn is_new(&self) -> bool {
        matches!(self, Existing::Absent | Existing::Review)
    }
}

/// What a stack status means before deploying.
pub fn existing(stack: &str, status: &str, params: BTreeSet<String>) -> Existing {
    let blocked = |advice: String| Existing::Blocked {
        status: status.to_owned(),
        advice,
    };
    match status {
        "DELETE_COMPLETE" => Existing::Absent,
        "REVIEW_IN_PROGRESS" => Existing::Review,
        "CREATE_COMPLETE"
        | "UPDATE_COMPLETE"
        | "UPDATE_ROLLBACK_COMPLETE"
        | "IMPORT_COMPLETE"
        | "IMPORT_ROLLBACK_COMPLETE" => Existing::Ready { params },
        "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" => blocked(format!(
            "its creation failed and it cannot be updated; look at its events, then delete it (`aws cloudformation delete-stack --stack-name {stack}`) and deploy again"
        )),
        "UPDATE_ROLLBACK_FAILED" => blocked(format!(
            "an update's rollback failed; fix what its events name, then `aws cloudformation continue-update-rollback --stack-name {stack}`"
        )),
        "DELETE_FAILED" => blocked(format!(
            "its deletion failed; look at its events and finish deleting it (`aws cloudformation delete-stack --stack-name {stack}`)"
        )),
        s if s.ends_with("_IN_PROGRESS") => {
            blocked("another operation is running on it; wait until it ends".to_owned())
        }
        _ => blocked("a status riffle deploy does not know; look at it in the console".to_owned()),
    }
}

/// Where a stack operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Still going (including the cleanup after an update, and rolling back).
    InProgress,
    /// Created or updated.
    Succeeded,
    /// Ended otherwise: failed, rolled back, deleted.
    Failed,
}

/// The phase of a stack status while waiting for an executed change set.
pub fn phase(status: &str) -> Phase {
    match status {
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE" => Phase::Succeeded,
        s if s.ends_with("_IN_PROGRESS") => Phase::InProgress,
        _ => Phase::Failed,
    }
}

/// One stack event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id (to tell new events from seen ones).
    pub id: String,
    /// When, ISO 8601 UTC.
    pub time: String,
    /// The resource's logical id (the stack's name for the stack itself).
    pub logical_id: String,
    /// The resource type.
    pub resource_type: String,
    /// CREATE_IN_PROGRESS, UPDATE_FAILED, ...
    pub status: String,
    /// Why, when CloudFormation says.
    pub reason: Option<String>,
}

impl Event {
    /// From the SDK's event.
    pub fn from_sdk(e: &aws_sdk_cloudformation::types::StackEvent) -> Event {
        Event {
            id: e.event_id().unwrap_or_default().to_owned(),
            time: e
                .timestamp()
                .and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
                .unwrap_or_default(),
            logical_id: e.logical_resource_id().unwrap_or_default().to_owned(),
            resource_type: e.resource_type().unwrap_or_default().to_owned(),
            status: e
                .resource_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            reason: e
                .resource_status_reason()
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        }
    }

    /// A resource that failed (CREATE_FAILED, UPDATE_FAILED, DELETE_FAILED, ...). Rollback
    /// statuses are the stack's consequence, not a cause, and are left out.
    pub fn is_failure(&self) -> bool {
        self.status.ends_with("_FAILED") && !self.status.contains("ROLLBACK")
    }

    /// One line: time, status, logical id, type, reason.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{}  {:<28} {} ({})",
            self.time, self.status, self.logical_id, self.resource_type
        );
        if let Some(r) = &self.reason {
            s.push_str(": ");
            s.push_str(r);
        }
        s
    }

    /// For a failure list: logical id, type, status, reason.
    pub fn failure_line(&self) -> String {
        format!(
            "{} ({}) {}: {}",
            self.logical_id,
            self.resource_type,
            self.status,
            self.reason.as_deref().unwrap_or("no reason given")
        )
    }
}

/// The events already seen of one stack, so each poll prints only new ones.
#[derive(Debug, Default)]
pub struct EventLog {
    seen: HashSet<String>,
    /// Every event that arrived after [`EventLog::mark_seen`], oldest first.
    pub arrived: Vec<Event>,
}

impl EventLog {
    /// Marks events as old (those from before the operation).
    pub fn mark_seen(&mut self, events: &[Event]) {
        self.seen.extend(events.iter().map(|e| e.id.clone()));
    }

    /// Whether this event was seen (the newest-first listing can stop paging there).
    pub fn has_seen(&self, event: &Event) -> bool {
        self.seen.contains(&event.id)
    }

    /// Takes a newest-first listing (as DescribeStackEvents gives it) and returns the events
    /// not seen before, oldest first, remembering them.
    pub fn take_new(&mut self, newest_first: &[Event]) -> Vec<Event> {
        let mut new: Vec<Event> = newest_first
            .iter()
            .filter(|e| !self.seen.contains(&e.id))
            .cloned()
            .collect();
        new.reverse();
        self.mark_seen(&new);
        self.arrived.extend(new.iter().cloned());
        new
    }

    /// The failures among the events since the operation began, as lines.
    pub fn failures(&self) -> Vec<String> {
        self.arrived
            .iter()
            .filter(|e| e.is_failure())
            .map(Event::failure_line)
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stack_statuses_decide_create_update_or_stop() {
        let p = BTreeSet::from(["Env".to_string()]);
        assert_eq!(
            existing("s", "REVIEW_IN_PROGRESS", p.clone()),
            Existing::Review
        );
        assert!(existing("s", "REVIEW_IN_PROGRESS", p.clone()).is_new());
        assert_eq!(
            existing("s", "UPDATE_ROLLBACK_COMPLETE", p.clone()),
            Existing::Ready { params: p.clone() }
        );
        assert!(!existing("s", "CREATE_COMPLETE", p.clone()).is_new());
        let Existing::Blocked { advice, .. } =
            existing("riffle-dev-platform", "ROLLBACK_COMPLETE", p.clone())
        else {
            panic!("ROLLBACK_COMPLETE is not deployable");
        };
        assert!(
            advice.contains("delete-stack --stack-name riffle-dev-platform"),
            "{advice}"
        );
        let Existing::Blocked { advice, .. } = existing("s", "UPDATE_IN_PROGRESS", p.clone())
        else {
            panic!("an operation in progress blocks");
        };
        assert!(advice.contains("wait"));
        assert!(matches!(
            existing("s", "UPDATE_ROLLBACK_FAILED", p),
            Existing::Blocked { .. }
        ));
    }

    #[test]
    fn phases() {
        assert_eq!(
            phase("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"),
            Phase::InProgress
        );
        assert_eq!(phase("UPDATE_ROLLBACK_IN_PROGRESS"), Phase::InProgress);
        assert_eq!(phase("UPDATE_COMPLETE"), Phase::Succeeded);
        assert_eq!(phase("CREATE_COMPLETE"), Phase::Succeeded);
        assert_eq!(phase("UPDATE_ROLLBACK_COMPLETE"), Phase::Failed);
        assert_eq!(phase("ROLLBACK_COMPLETE"), Phase::Failed);
        assert_eq!(phase("CREATE_FAILED"), Phase::Failed);
    }

    fn ev(id: &str, status: &str, reason: Option<&str>) -> Event {
        Event {
            id: id.into(),
            time: "2026-12-06T18:42:00Z".into(),
            logical_id: format!("R{id}"),
            resource_type: "AWS::SQS::Queue".into(),
            status: status.into(),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn only_new_events_come_out_oldest_first() {
        let mut log = EventLog::default();
        log.mark_seen(&[ev("1", "CREATE_COMPLETE", None)]);
        let first = [
            ev("3", "UPDATE_FAILED", Some("bad")),
            ev("2", "UPDATE_IN_PROGRESS", None),
            ev("1", "CREATE_COMPLETE", None),
        ];
        let ids = |v: Vec<Event>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(log.take_new(&first)), ["2", "3"]);
        let second = [
            ev("4", "UPDATE_ROLLBACK_COMPLETE", None),
            ev("3", "UPDATE_FAILED", Some("bad")),
        ];
        assert_eq!(ids(log.take_new(&second)), ["4"]);
        assert!(log.has_seen(&ev("2", "", None)));
        assert_eq!(log.failures(), ["R3 (AWS::SQS::Queue) UPDATE_FAILED: bad"]);
    }

    #[test]
    fn failures_leave_out_rollbacks_and_lines_read_well() {
        assert!(ev("1", "CREATE_FAILED", None).is_failure());
        assert!(!ev("1", "UPDATE_ROLLBACK_FAILED", None).is_failure());
        assert!(!ev("1", "UPDATE_COMPLETE", None).is_failure());
        assert_eq!(
            ev(
                "7",
                "UPDATE_FAILED",
                Some("Value of property X must be a number")
            )
            .line(),
            "2026-12-06T18:42:00Z  UPDATE_FAILED                R7 (AWS::SQS::Queue): Value of property X must be a number"
        );
        assert_eq!(
            ev("7", "CREATE_FAILED", None).failure_line(),
            "R7 (AWS::SQS::Queue) CREATE_FAILED: no reason given"
        );
    }
}
