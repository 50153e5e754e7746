//! [`Expected`]: what the pipeline must make of one event, and for a valid one the view key,
//! window and metric it counts towards, computed from the rules files and the reference
//! catalogue, never by the pipeline's code.

use super::Generator;
use super::source::SubjectKind;
use crate::events::Payload;
use crate::rules::fill_template;

/// What the pipeline must make of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// It passes validation and counts `metric` towards `(agg_key, window_start)` in the view.
    Valid {
        /// Payload subject.
        subject: String,
        /// The view key, e.g. `orders:category=books`.
        agg_key: String,
        /// Start of the event's tumbling window, epoch millis.
        window_start: i64,
        /// The value aggregated under the key.
        metric: f64,
        /// Whether the reference data exists; `None` for subjects that join none.
        reference_found: Option<bool>,
    },
    /// The validator rejects it with `code`.
    Rejected {
        /// The reject code (see [`InvalidKind::code`](super::InvalidKind::code)).
        code: &'static str,
        /// Whether the envelope still decodes, so the reject can name the event id.
        envelope_readable: bool,
    },
}

impl Generator {
    pub(super) fn expected_valid(
        &self,
        subject: SubjectKind,
        payload: &Payload,
        event_time: i64,
    ) -> Expected {
        let rules = &self.subjects[subject as usize].rules;
        let attributes = rules.lookup.as_ref().map(|(field, prefix)| {
            payload
                .text(field)
                .and_then(|id| self.catalogue.get(&format!("{prefix}{id}")))
        });
        let found = attributes.flatten();
        let agg_key = fill_template(&rules.agg_key, found, |name| payload.text(name));
        // Same left-to-right product as the rules file lists; `new` checked every factor exists.
        let metric = rules
            .metric_product
            .iter()
            .fold(1.0, |acc, f| acc * payload.number(f).unwrap_or(f64::NAN));
        Expected::Valid {
            subject: rules.subject.clone(),
            agg_key,
            window_start: rules.window_start(event_time),
            metric,
            reference_found: attributes.map(|a| a.is_some()),
        }
    }
}
