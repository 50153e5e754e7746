//! The Lambda Kinesis event read by a scanner made for its one shape: `{"Records":[...]}`,
//! each record the fields Lambda writes, strings without escapes. It takes the strings
//! straight from the text (serde_json walks every byte of every string through its
//! generic machinery, and a record is ~800 bytes of which the stage keeps ~200), and gives
//! up (`None`) at anything else: an escape, an unknown or repeated field, a missing one,
//! `null`, malformed JSON. The caller then parses with serde, which decides, so this path
//! is only ever faster, never different (a test holds the two to each other).

use std::sync::Arc;

use super::{KinesisEvent, KinesisEventRecord, KinesisRecord, Source, arrival, source_of};

/// The event, or `None` when it is not in the shape this scanner reads.
pub(super) fn parse(json: &str) -> Option<KinesisEvent> {
    let mut c = Cursor { text: json, at: 0 };
    c.expect(b'{')?;
    c.key_of(&["Records"])?;
    c.expect(b'[')?;
    let mut records = Vec::new();
    if !c.peek_is(b']') {
        loop {
            records.push(record(&mut c)?);
            if !c.comma_or(b']')? {
                break;
            }
        }
    } else {
        c.expect(b']')?;
    }
    c.expect(b'}')?;
    c.end()?;
    Some(KinesisEvent { records })
}

/// One record object; its `kinesis` object is read by [`kinesis`].
fn record(c: &mut Cursor<'_>) -> Option<KinesisEventRecord> {
    let mut fields: [Option<&str>; 7] = [None; 7];
    let mut inner = None;
    c.expect(b'{')?;
    loop {
        match c.key_of(&RECORD_KEYS)? {
            0 => {
                if inner.is_some() {
                    return None;
                }
                inner = Some(kinesis(c)?);
            }
            key => {
                let slot = &mut fields[key - 1];
                if slot.is_some() {
                    return None;
                }
                *slot = Some(c.string()?);
            }
        }
        if !c.comma_or(b'}')? {
            break;
        }
    }
    let [_, _, event_id, _, role, region, arn] = fields;
    let shard = event_id
        .and_then(|id| id.split_once(':'))
        .map_or("", |(shard, _)| shard);
    let source: Arc<Source> = source_of(
        shard,
        region.unwrap_or_default(),
        arn.unwrap_or_default(),
        role.unwrap_or_default(),
    );
    Some(KinesisEventRecord {
        source,
        kinesis: inner?,
    })
}

/// The fields of a record: `kinesis`, then the strings in the order `record` unpacks them.
const RECORD_KEYS: [&str; 8] = [
    "kinesis",
    "eventSource",
    "eventVersion",
    "eventID",
    "eventName",
    "invokeIdentityArn",
    "awsRegion",
    "eventSourceARN",
];

/// The fields of `kinesis`: the strings in the order `kinesis` unpacks them, then the
/// arrival time.
const KINESIS_KEYS: [&str; 6] = [
    "kinesisSchemaVersion",
    "partitionKey",
    "sequenceNumber",
    "data",
    "encryptionType",
    "approximateArrivalTimestamp",
];

fn kinesis(c: &mut Cursor<'_>) -> Option<KinesisRecord> {
    let mut fields: [Option<&str>; 5] = [None; 5];
    let mut seconds = None;
    c.expect(b'{')?;
    loop {
        match c.key_of(&KINESIS_KEYS)? {
            5 => {
                if seconds.is_some() {
                    return None;
                }
                seconds = Some(c.number()?);
            }
            key => {
                let slot = &mut fields[key];
                if slot.is_some() {
                    return None;
                }
                *slot = Some(c.string()?);
            }
        }
        if !c.comma_or(b'}')? {
            break;
        }
    }
    let [_, partition_key, sequence_number, data, _] = fields;
    Some(KinesisRecord {
        data: base64_simd::STANDARD.decode_to_vec(data?).ok()?,
        partition_key: partition_key.unwrap_or_default().to_owned(),
        sequence_number: sequence_number.unwrap_or_default().to_owned(),
        approximate_arrival_timestamp: arrival(seconds?).ok()?,
    })
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn peek_is(&mut self, byte: u8) -> bool {
        self.skip_ws();
        self.bytes().get(self.at) == Some(&byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.peek_is(byte).then(|| self.at += 1)
    }

    /// After a member: `true` at a comma (another follows), `false` at `close`.
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        if self.expect(b',').is_some() {
            return Some(true);
        }
        self.expect(close).map(|()| false)
    }

    /// A string without escapes or control characters, borrowed from the text.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let rest = &self.bytes()[start..];
        let len = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[len] != b'"' {
            return None;
        }
        // Without an early exit, so the compiler vectorizes it.
        let control = rest[..len].iter().fold(false, |seen, b| seen | (*b < 0x20));
        if control {
            return None;
        }
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A member's key, which must be one of `keys` (its index), and its colon. Compared in
    /// place: the keys are known, so their text need not be searched for its end.
    fn key_of(&mut self, keys: &[&str]) -> Option<usize> {
        self.expect(b'"')?;
        let rest = &self.bytes()[self.at..];
        // The closing quote where a key of that length would end rules out most keys with
        // one byte read, before any comparison.
        let found = keys
            .iter()
            .position(|k| rest.get(k.len()) == Some(&b'"') && rest.starts_with(k.as_bytes()))?;
        self.at += keys[found].len() + 1;
        self.expect(b':')?;
        Some(found)
    }

    /// A JSON number (the grammar exactly: no sign but `-`, no leading zeros, digits after
    /// a point and in an exponent).
    fn number(&mut self) -> Option<f64> {
        self.skip_ws();
        let start = self.at;
        let b = self.bytes();
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits(b, i),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let after = digits(b, i + 1);
            if after == i + 1 {
                return None;
            }
            i = after;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let after = digits(b, i);
            if after == i {
                return None;
            }
            i = after;
        }
        self.at = i;
        self.text.get(start..i)?.parse().ok()
    }

    /// Only whitespace left.
    fn end(&mut self) -> Option<()> {
        self.skip_ws();
        (self.at == self.text.len()).then_some(())
    }
}

/// The index after the run of digits starting at `i`.
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const FIXTURE: &str = include_str!("../../../../tests/fixtures/kinesis_event.json");

    /// `from_json` and serde agree: the same event, or both an error.
    fn agree(json: &str) {
        let ours = KinesisEvent::from_json(json);
        let serde = serde_json::from_str::<KinesisEvent>(json);
        match (&ours, &serde) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{json}"),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "fast {:?} vs serde {:?} on {json}",
                ours.is_ok(),
                serde.is_ok()
            ),
        }
    }

    #[test]
    fn lambdas_sample_takes_the_fast_path_and_reads_the_same() {
        let fast = parse(FIXTURE).expect("Lambda's shape");
        assert_eq!(fast, serde_json::from_str::<KinesisEvent>(FIXTURE).unwrap());
        let written = serde_json::to_string(&fast).unwrap();
        assert_eq!(parse(&written).expect("our own writing"), fast);
        assert!(parse(r#"{"Records":[]}"#).unwrap().records.is_empty());
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let one = |kinesis: &str, rest: &str| {
            format!(r#"{{"Records":[{{"kinesis":{{{kinesis}}}{rest}}}]}}"#)
        };
        let k = r#""partitionKey":"k","sequenceNumber":"1","data":"AAE=","approximateArrivalTimestamp":1.5"#;
        let cases = [
            one(&k.replace(r#""k""#, r#""k\"q""#), ""),
            one(k, r#","eventID":null"#),
            one(k, r#","somethingNew":{"a":[1,2]}"#),
            one(&format!(r#"{k},"data":"AAE=""#), ""),
            one(&k.replace(r#","data":"AAE=""#, ""), ""),
            one(&k.replace("1.5", "01.5"), ""),
            one(&k.replace("1.5", "1."), ""),
            one(&k.replace("1.5", "1e300"), ""),
            one(&k.replace("AAE=", "!!"), ""),
            format!("{} x", one(k, "")),
            one(k, r#","eventID":"s:1","eventID":"s:2""#),
        ];
        for json in &cases {
            assert!(parse(json).is_none(), "{json}");
            agree(json);
        }
        // Whitespace anywhere, fields in any order, exponents: still the fast path.
        let spaced = format!(
            " {{ \"Records\" : [ {{ \"eventID\" : \"s:1\" , \"kinesis\" : {{ {} }} }} ] }} \n",
            k.replace("1.5", "15e-1")
        );
        assert!(parse(&spaced).is_some(), "{spaced}");
        agree(&spaced);
    }

    #[test]
    fn mutated_events_read_as_serde_reads_them() {
        let mut rng = StdRng::seed_from_u64(11);
        let base = FIXTURE.as_bytes();
        let alphabet = b"{}[]:,\" \\0123456789.eE-+abAZ=/n";
        for _ in 0..5_000 {
            let mut bytes = base.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                match rng.random_range(0..3) {
                    0 => bytes[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            if let Ok(json) = std::str::from_utf8(&bytes) {
                agree(json);
            }
        }
    }
}
