//! Where a record sits on its shard: one definition for the stages' origin marks, the view
//! items' applied positions and the tools that read them (ADR 0009, ADR 0010).

/// Decimal digits of the sequence number in an encoded position. Kinesis sequence numbers
/// have 56 digits today; 64 leaves room and fits two 32-digit halves in `u128`s.
pub const SEQUENCE_DIGITS: usize = 64;
/// Largest sub-record index an encoded position holds (5 digits). Aggregates between stages
/// are at most about 1 MiB (ADR 0010), and a user record takes well over ten bytes in one
/// (its envelope alone is more), so its index stays below this.
pub const MAX_SUB_INDEX: u32 = 99_999;
/// Half of [`SEQUENCE_DIGITS`]: 10^32 < 2^107, so each half fits a `u128`.
const HALF_DIGITS: usize = SEQUENCE_DIGITS / 2;
/// 10^16: a quarter of the digits, which fits a `u64`.
const TEN_POW_QUARTER: u128 = 10u128.pow(HALF_DIGITS as u32 / 2);
/// Length of an encoded position: the digits, `:` and the 5-digit sub index.
const ENCODED_LEN: usize = SEQUENCE_DIGITS + 6;

/// Where a user record sits on its shard: the Kinesis sequence number of the record that
/// carried it and its index among the user records of that record (0 for a plain record).
///
/// Ordered as the stream is; [`Position::encode`] gives a fixed-width string that sorts the
/// same way (`<64-digit sequence>:<5-digit sub index>`). Copy and allocation-free, because
/// the aggregator keeps one per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number divided by 10^32.
    hi: u128,
    /// Sequence number modulo 10^32.
    lo: u128,
    sub: u32,
}

impl Position {
    /// The position of sub-record `sub` of the record with `sequence_number`; `None` if the
    /// number is not decimal digits, has more than [`SEQUENCE_DIGITS`] significant digits,
    /// or `sub` exceeds [`MAX_SUB_INDEX`].
    pub fn new(sequence_number: &str, sub: u32) -> Option<Position> {
        let digits = sequence_number.as_bytes();
        if digits.is_empty() || sub > MAX_SUB_INDEX || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let significant = sequence_number.trim_start_matches('0');
        if significant.len() > SEQUENCE_DIGITS {
            return None;
        }
        let split = significant.len().saturating_sub(HALF_DIGITS);
        let (hi, lo) = significant.split_at(split);
        Some(Position {
            hi: parse_digits(hi)?,
            lo: parse_digits(lo)?,
            sub,
        })
    }

    /// The fixed-width text form: equal widths make string order the stream's order.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(ENCODED_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends [`Position::encode`]'s form to `out`. Formatting a `u128` divides by ten in
    /// 128 bits per digit; as four 16-digit `u64` quarters it costs a tenth (the aggregator
    /// encodes one position per record).
    pub fn encode_into(&self, out: &mut String) {
        use std::fmt::Write;
        let quarter = |half: u128| {
            (
                u64::try_from(half / TEN_POW_QUARTER).unwrap_or(u64::MAX),
                u64::try_from(half % TEN_POW_QUARTER).unwrap_or(u64::MAX),
            )
        };
        let (a, b) = quarter(self.hi);
        let (c, d) = quarter(self.lo);
        // Writing to a String cannot fail.
        let _ = write!(out, "{a:016}{b:016}{c:016}{d:016}:{:05}", self.sub);
    }

    /// Reads [`Position::encode`]'s form back.
    pub fn decode(text: &str) -> Option<Position> {
        let (seq, sub) = text.split_once(':')?;
        if seq.len() != SEQUENCE_DIGITS || sub.len() != 5 {
            return None;
        }
        Position::new(seq, parse_digits(sub)?.try_into().ok()?)
    }

    /// The sub-record index.
    pub fn sub(&self) -> u32 {
        self.sub
    }

    /// The sequence number in decimal, without leading zeros.
    pub fn sequence(&self) -> String {
        let mut text = String::with_capacity(ENCODED_LEN);
        self.encode_into(&mut text);
        text.truncate(SEQUENCE_DIGITS);
        let significant = text.trim_start_matches('0');
        if significant.is_empty() {
            "0".to_owned()
        } else {
            significant.to_owned()
        }
    }
}

fn parse_digits(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    if digits.len() > HALF_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Two u64 parses instead of 128-bit arithmetic per digit.
    let (hi, lo) = digits.split_at(digits.len().saturating_sub(HALF_DIGITS / 2));
    let hi: u64 = if hi.is_empty() { 0 } else { hi.parse().ok()? };
    let lo: u64 = lo.parse().ok()?;
    Some(u128::from(hi) * TEN_POW_QUARTER + u128::from(lo))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_like_the_stream_and_encode_at_a_fixed_width() {
        let seqs = [
            "0",
            "7",
            "49590338271490256608559692538361571095921575989136588898",
            "49590338271490256608559692538361571095921575989136588899",
            "149590338271490256608559692538361571095921575989136588898",
            "9999999999999999999999999999999999999999999999999999999999999999",
        ];
        let mut positions = Vec::new();
        for seq in seqs {
            for sub in [0, 1, 12, MAX_SUB_INDEX] {
                positions.push(Position::new(seq, sub).unwrap());
            }
        }
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(sorted, positions, "numeric order, then sub index");
        let encoded: Vec<String> = positions.iter().map(Position::encode).collect();
        assert!(encoded.iter().all(|e| e.len() == ENCODED_LEN));
        assert_eq!(
            encoded[8],
            "0000000049590338271490256608559692538361571095921575989136588898:00000"
        );
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "text order agrees");
        for (p, e) in positions.iter().zip(&encoded) {
            assert_eq!(Position::decode(e), Some(*p));
        }
        assert_eq!(
            Position::new("0049", 3).unwrap(),
            Position::new("49", 3).unwrap()
        );
        assert_eq!(
            Position::new("49", 3).unwrap().encode(),
            format!("{}49:00003", "0".repeat(62))
        );
    }

    #[test]
    fn foreign_sequence_numbers_have_no_position() {
        for bad in ["", "12a", "-1", " 1", &"1".repeat(65)] {
            assert_eq!(Position::new(bad, 0), None, "{bad:?}");
        }
        assert_eq!(Position::new("1", MAX_SUB_INDEX + 1), None);
        for bad in ["", "1:00000", &format!("{}:0", "0".repeat(64)), "x:y"] {
            assert_eq!(Position::decode(bad), None, "{bad:?}");
        }
    }
}
