//! Deliberately invalid events: the [`InvalidKind`]s, each the reject code the validator must
//! give, and how an event is broken to be one (a payload field, the event time, the envelope,
//! the frame or the bytes), so that exactly one rule fails.

use rand::Rng;
use riffle_codec::{Envelope, frame};

use super::Generator;
use super::source::SubjectKind;
use crate::events::{NumberKind, Payload};

/// A schema id no registry hands out in the demo or the tests: `unknown_schema` events use it.
pub const UNREGISTERED_SCHEMA_ID: u32 = 999_999;
/// Envelope subjects other than the payload schema's, for `subject_mismatch` events.
pub const FOREIGN_SUBJECTS: [&str; 2] = ["com.riffle.nope.Unknown", "com.riffle.shop.OrderVoided"];

/// A way an invalid event is broken; each maps to the reject code the validator must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidKind {
    /// Byte 0 of the record is not 0.
    BadMagic,
    /// The record is 1 to 4 bytes long.
    Truncated,
    /// The frame's or the payload's schema id is not registered.
    UnknownSchema,
    /// The envelope or the payload bytes do not match their schema.
    Malformed,
    /// A string field does not match its `pattern`.
    PatternMismatch,
    /// A number below its `min` (or NaN).
    BelowMin,
    /// A number above its `max`.
    AboveMax,
    /// A `required` field is empty or null.
    MissingField,
    /// |ingest_time - event_time| beyond the subject's `max_event_time_skew_secs`.
    EventTimeSkew,
    /// The envelope names a subject other than its payload schema's.
    SubjectMismatch,
}

impl InvalidKind {
    /// Every kind.
    pub const ALL: [InvalidKind; 10] = [
        InvalidKind::BadMagic,
        InvalidKind::Truncated,
        InvalidKind::UnknownSchema,
        InvalidKind::Malformed,
        InvalidKind::PatternMismatch,
        InvalidKind::BelowMin,
        InvalidKind::AboveMax,
        InvalidKind::MissingField,
        InvalidKind::EventTimeSkew,
        InvalidKind::SubjectMismatch,
    ];

    /// The validator's reject code for this kind.
    pub fn code(self) -> &'static str {
        match self {
            InvalidKind::BadMagic => "bad_magic",
            InvalidKind::Truncated => "truncated",
            InvalidKind::UnknownSchema => "unknown_schema",
            InvalidKind::Malformed => "malformed",
            InvalidKind::PatternMismatch => "pattern_mismatch",
            InvalidKind::BelowMin => "below_min",
            InvalidKind::AboveMax => "above_max",
            InvalidKind::MissingField => "missing_field",
            InvalidKind::EventTimeSkew => "event_time_skew",
            InvalidKind::SubjectMismatch => "subject_mismatch",
        }
    }

    /// Whether this kind is made by breaking one payload field; the others break the
    /// envelope, the frame or the bytes.
    pub(super) fn breaks_a_field(self) -> bool {
        matches!(
            self,
            InvalidKind::PatternMismatch
                | InvalidKind::BelowMin
                | InvalidKind::AboveMax
                | InvalidKind::MissingField
        )
    }
}

/// How an invalid event's record is still to be broken once its envelope is encoded.
#[derive(Debug)]
pub(super) struct Spoiled {
    /// Whether the envelope still decodes, so the reject can name the event id.
    pub(super) envelope_readable: bool,
    /// A schema id written into the frame in place of the envelope's.
    frame_id: Option<u32>,
    /// Whether bytes are cut off the end of the encoded envelope.
    cut_envelope: bool,
}

impl Generator {
    /// Whether the next event is invalid, and how: `invalid_ratio` of the events are, each of
    /// a kind drawn from `invalid_kinds`.
    pub(super) fn pick_invalid(&mut self) -> Option<InvalidKind> {
        (self.config.invalid_ratio > 0.0 && self.rng.random_bool(self.config.invalid_ratio))
            .then(|| self.pick_invalid_kind())
            .flatten()
    }

    fn pick_invalid_kind(&mut self) -> Option<InvalidKind> {
        let kinds = &self.config.invalid_kinds;
        if kinds.is_empty() {
            return None;
        }
        kinds.get(self.rng.random_range(0..kinds.len())).copied()
    }

    /// An event time beyond the skew `kind`'s rules allow from `ingest_time`, or `None` when
    /// they set no limit.
    pub(super) fn skewed_event_time(&mut self, kind: SubjectKind, ingest_time: i64) -> Option<i64> {
        let max = self.subjects[kind as usize].rules.max_skew_ms?;
        let beyond = max + 1_000 + self.rng.random_range(0..=3_600_000);
        // Clocks go wrong both ways; a quarter of the skewed events are from the future.
        Some(if self.rng.random_bool(0.25) {
            ingest_time + beyond
        } else {
            ingest_time - beyond
        })
    }

    /// Breaks one field so that exactly one rule of the subject fails with `kind`'s code.
    /// False if the rules give no field that can be broken that way.
    pub(super) fn break_field(
        &mut self,
        subject: SubjectKind,
        kind: InvalidKind,
        payload: &mut Payload,
    ) -> bool {
        let rules = &self.subjects[subject as usize].rules;
        let candidates: Vec<_> = rules
            .fields
            .iter()
            .filter(|f| match kind {
                InvalidKind::PatternMismatch => f.pattern.is_some(),
                InvalidKind::BelowMin => f.min.is_some() && payload.number_kind(&f.name).is_some(),
                InvalidKind::AboveMax => f.max.is_some() && payload.number_kind(&f.name).is_some(),
                InvalidKind::MissingField => f.required,
                _ => false,
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        // Try candidates from a random start so every breakable field gets broken sometimes.
        let start = if order.is_empty() {
            0
        } else {
            self.rng.random_range(0..order.len())
        };
        order.rotate_left(start);
        for i in order {
            let Some(field) = candidates.get(i) else {
                continue;
            };
            let done = match kind {
                InvalidKind::PatternMismatch => {
                    let base = payload.text(&field.name).unwrap_or_else(|| "SAVE10".into());
                    let attempt = self.rng.random_range(0..4usize);
                    let bad = (0..5)
                        .map(|k| mangle(&base, (attempt + k) % 5))
                        .find(|v| !v.is_empty() && !rules.pattern_accepts(&field.name, v));
                    bad.is_some_and(|v| payload.set_text(&field.name, v))
                }
                InvalidKind::BelowMin | InvalidKind::AboveMax => {
                    let integer = payload.number_kind(&field.name) == Some(NumberKind::Integer);
                    let step = f64::from(self.rng.random_range(0u8..10));
                    let value = match (kind, field.min, field.max) {
                        (InvalidKind::BelowMin, Some(_), _)
                            if !integer && self.rng.random_bool(0.2) =>
                        {
                            // NaN compares below nothing, yet the rules count it as below min.
                            f64::NAN
                        }
                        (InvalidKind::BelowMin, Some(min), _) if integer => min.ceil() - 1.0 - step,
                        (InvalidKind::BelowMin, Some(min), _) => min - 1.0 - step * 3.7,
                        (_, _, Some(max)) if integer => max.floor() + 1.0 + step,
                        (_, _, Some(max)) => max + 1.0 + step * max.abs() * 0.05,
                        _ => continue,
                    };
                    payload.set_number(&field.name, value)
                }
                InvalidKind::MissingField => payload.clear(&field.name),
                _ => false,
            };
            if done {
                return true;
            }
        }
        false
    }

    /// Breaks `envelope` or the payload `body` as `invalid` asks, as far as that is done
    /// before the envelope is encoded, and says what is left to do to the record.
    pub(super) fn spoil_envelope(
        &mut self,
        invalid: Option<InvalidKind>,
        envelope: &mut Envelope,
        body: &mut Vec<u8>,
    ) -> Spoiled {
        let mut envelope_readable = true;
        let mut frame_id = None;
        let mut cut_envelope = false;
        match invalid {
            Some(InvalidKind::SubjectMismatch) => {
                let i = self.rng.random_range(0..FOREIGN_SUBJECTS.len());
                envelope.subject = FOREIGN_SUBJECTS[i].to_string();
            }
            Some(InvalidKind::UnknownSchema) => {
                if self.rng.random_bool(0.5) {
                    frame_id = Some(UNREGISTERED_SCHEMA_ID);
                    envelope_readable = false;
                } else {
                    envelope.schema_id = UNREGISTERED_SCHEMA_ID as i32;
                }
            }
            Some(InvalidKind::Malformed) => match self.rng.random_range(0..3) {
                0 => {
                    let cut = self.rng.random_range(1..=body.len().clamp(1, 3));
                    body.truncate(body.len().saturating_sub(cut));
                }
                1 => {
                    let extra = self.rng.random_range(1..=3);
                    body.extend((0..extra).map(|_| self.rng.random::<u8>()));
                }
                _ => {
                    cut_envelope = true;
                    envelope_readable = false;
                }
            },
            Some(InvalidKind::BadMagic | InvalidKind::Truncated) => envelope_readable = false,
            _ => {}
        }
        Spoiled {
            envelope_readable,
            frame_id,
            cut_envelope,
        }
    }

    /// Breaks the encoded `record` as `spoiled` and `invalid` ask: another schema id in the
    /// frame, the envelope cut short, a bad magic byte or a truncated record.
    pub(super) fn spoil_record(
        &mut self,
        invalid: Option<InvalidKind>,
        spoiled: &Spoiled,
        record: &mut Vec<u8>,
    ) {
        if let Some(id) = spoiled.frame_id {
            record.splice(1..frame::HEADER_LEN, id.to_be_bytes());
        }
        if spoiled.cut_envelope {
            // Keep the header and at least one body byte, so it is the body that is wrong.
            let room = record
                .len()
                .saturating_sub(frame::HEADER_LEN + 1)
                .clamp(1, 8);
            let cut = self.rng.random_range(1..=room);
            record.truncate(record.len().saturating_sub(cut).max(frame::HEADER_LEN + 1));
        }
        match invalid {
            Some(InvalidKind::BadMagic) => {
                if let Some(b) = record.first_mut() {
                    *b = self.rng.random_range(1..=u8::MAX);
                }
            }
            Some(InvalidKind::Truncated) => {
                let keep = self.rng.random_range(1..frame::HEADER_LEN);
                record.truncate(keep);
            }
            _ => {}
        }
    }
}

/// A few ways to spoil a string so that a pattern no longer matches.
fn mangle(value: &str, how: usize) -> String {
    match how {
        0 => format!("{value}!"),
        1 if value.chars().any(|c| c.is_ascii_lowercase()) => value.to_ascii_uppercase(),
        1 => value.to_ascii_lowercase(),
        2 => value.chars().skip(1).collect(),
        3 => format!("x {value}"),
        _ => "BAD value!".to_string(),
    }
}
