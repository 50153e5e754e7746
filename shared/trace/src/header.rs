//! X-Ray's trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`), read and
//! written by hand: every traced record in every stage reads one and writes one, and the
//! propagator's parse and `format!` cost more than the rest of a record's span together.
//! The tests hold both directions to opentelemetry-aws's propagator.

use opentelemetry::trace::{SpanId, TraceId};

const ROOT: &str = "Root=";
const PARENT: &str = "Parent=";

/// What a sampled header says, and where its parent id sits (for rewriting it in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampled {
    pub trace_id: TraceId,
    pub parent: Option<SpanId>,
    /// Byte offset of the parent's 16 hex digits in the header.
    pub parent_at: Option<usize>,
}

/// Whether a header decides: `Some(true)` sampled, `Some(false)` not, `None` no decision.
/// A substring search, so an unsampled record costs next to nothing.
pub(crate) fn decision(header: &str) -> Option<bool> {
    if header.contains("Sampled=1") {
        Some(true)
    } else if header.contains("Sampled=0") {
        Some(false)
    } else {
        None
    }
}

/// The trace (and parent) a header names; `None` when its root is malformed.
pub(crate) fn parse(header: &str) -> Option<Sampled> {
    let mut trace_id = None;
    let mut parent = None;
    let mut offset = 0;
    for part in header.split(';') {
        let start = offset + (part.len() - part.trim_start().len());
        offset += part.len() + 1;
        let part = part.trim();
        if let Some(root) = part.strip_prefix(ROOT) {
            trace_id = Some(parse_root(root)?);
        } else if let Some(hex) = part.strip_prefix(PARENT) {
            let id = parse_hex(hex, 16)? as u64;
            parent = Some((SpanId::from(id), start + PARENT.len()));
        }
    }
    let trace_id = trace_id?;
    Some(Sampled {
        trace_id,
        parent: parent.map(|(id, _)| id),
        parent_at: parent.map(|(_, at)| at),
    })
}

/// `1-<epoch seconds, 8 hex>-<24 hex>` into the 128-bit trace id it stands for.
fn parse_root(root: &str) -> Option<TraceId> {
    let rest = root.strip_prefix("1-")?;
    let (secs, random) = rest.split_once('-')?;
    let high = parse_hex(secs, 8)?;
    let low = parse_hex(random, 24)?;
    let id = (high << 96) | low;
    (id != 0).then(|| TraceId::from(id))
}

/// Exactly `digits` (at most 32) hex digits, by hand: `from_str_radix` on a `u128` costs
/// more than the rest of the header's read.
fn parse_hex(text: &str, digits: usize) -> Option<u128> {
    if text.len() != digits || digits > 32 {
        return None;
    }
    let bytes = text.as_bytes();
    let split = digits.saturating_sub(16);
    let high = hex_u64(&bytes[..split])?;
    let low = hex_u64(&bytes[split..])?;
    Some((u128::from(high) << 64) | u128::from(low))
}

/// Each byte's value as a hex digit, or `0xff`.
const HEX_DIGIT: [u8; 256] = {
    let mut table = [0xff_u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// At most 16 hex digits, by table and without a branch per digit: the read of a header's
/// 48 digits was most of a traced record's cost in a stage.
fn hex_u64(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    let mut invalid = 0u8;
    for &b in digits {
        let nibble = HEX_DIGIT[usize::from(b)];
        invalid |= nibble;
        value = (value << 4) | u64::from(nibble & 0x0f);
    }
    (digits.len() <= 16 && invalid & 0xf0 == 0).then_some(value)
}

/// The length of a header in the layout Riffle's producers and stages write
/// (`Root=1-<8>-<24>;Parent=<16>;Sampled=<0|1>`).
const CANONICAL_LEN: usize = 74;

/// A header in the layout Riffle writes, read at fixed offsets: `None` when it is not in
/// that layout (then [`decision`] and [`parse`] read it whatever its form); else its
/// decision, and what it names when sampled. Nearly every header a stage reads was written
/// by a Riffle producer or stage, so this is the path they take.
pub(crate) fn canonical(header: &str) -> Option<Option<Sampled>> {
    let b = header.as_bytes();
    if b.len() != CANONICAL_LEN
        || &b[..7] != b"Root=1-"
        || b[15] != b'-'
        || &b[40..48] != b";Parent="
        || &b[64..73] != b";Sampled="
    {
        return None;
    }
    match b[73] {
        b'0' => return Some(None),
        b'1' => {}
        _ => return None,
    }
    let secs = hex_u64(&b[7..15])?;
    let high = hex_u64(&b[16..24])?;
    let low = hex_u64(&b[24..40])?;
    let parent = hex_u64(&b[48..64])?;
    let id = (u128::from(secs) << 96) | (u128::from(high) << 64) | u128::from(low);
    if id == 0 {
        return None;
    }
    Some(Some(Sampled {
        trace_id: TraceId::from(id),
        parent: Some(SpanId::from(parent)),
        parent_at: Some(48),
    }))
}

/// Names `span` as the parent in `header`: over the old parent's digits when there is one
/// (the rest of the header, lineage included, goes on as it came), else a new header.
pub(crate) fn reparent(header: &mut String, sampled: &Sampled, span: SpanId) {
    match sampled.parent_at {
        Some(at) if header.len() >= at + 16 => {
            let mut bytes = std::mem::take(header).into_bytes();
            hex_into(
                &mut bytes[at..at + 16],
                u64::from_be_bytes(span.to_bytes()).into(),
            );
            // Hex digits over hex digits: still UTF-8, and the buffer is the same one.
            *header = String::from_utf8(bytes).unwrap_or_default();
        }
        _ => *header = new_header(sampled.trace_id, span),
    }
}

/// The header of a trace started here, sampled, with `span` as the parent.
pub(crate) fn new_header(trace_id: TraceId, span: SpanId) -> String {
    let id = u128::from_be_bytes(trace_id.to_bytes());
    let mut out = [0u8; 80];
    let mut at = 0;
    for piece in [
        Piece::Text("Root=1-"),
        Piece::Hex(id >> 96, 8),
        Piece::Text("-"),
        Piece::Hex(id & ((1 << 96) - 1), 24),
        Piece::Text(";Parent="),
        Piece::Hex(u64::from_be_bytes(span.to_bytes()).into(), 16),
        Piece::Text(";Sampled=1"),
    ] {
        let n = match piece {
            Piece::Text(t) => {
                out[at..at + t.len()].copy_from_slice(t.as_bytes());
                t.len()
            }
            Piece::Hex(v, digits) => {
                hex_into(&mut out[at..at + digits], v);
                digits
            }
        };
        at += n;
    }
    String::from_utf8(out[..at].to_vec()).unwrap_or_default()
}

enum Piece {
    Text(&'static str),
    Hex(u128, usize),
}

/// `value`'s low hex digits, lower case, filling `out`.
pub(crate) fn hex_into(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// `trace_id` as X-Ray writes it: `1-<epoch seconds, 8 hex>-<24 hex>`.
pub(crate) fn root(trace_id: TraceId) -> String {
    let id = u128::from_be_bytes(trace_id.to_bytes());
    format!("1-{:08x}-{:024x}", id >> 96, id & ((1 << 96) - 1))
}

/// A new trace id in X-Ray's form: the epoch seconds, then 96 random bits (X-Ray refuses
/// ids that do not start with a time near now).
pub(crate) fn new_trace_id(now_secs: u64) -> TraceId {
    let random = rand::random::<u128>() >> 32;
    TraceId::from((u128::from(now_secs as u32) << 96) | random)
}

/// A new span id (never the invalid zero).
pub(crate) fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>() | 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry_aws::trace::xray_propagator::{
        span_context_from_str, span_context_to_string,
    };

    const HEADER: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

    #[test]
    fn reads_what_the_propagator_reads() {
        let theirs = span_context_from_str(HEADER).unwrap();
        // The propagator's own form, and the spaces and order X-Ray's docs allow.
        for header in [
            HEADER,
            "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8; Sampled=1",
            "Sampled=1;Parent=53995c3f42cd8ad8;Root=1-5759e988-bd862e3fe1be46a994272793;Lineage=a87bd80c:0",
        ] {
            let ours = parse(header).unwrap();
            assert_eq!(ours.trace_id, theirs.trace_id(), "{header}");
            assert_eq!(ours.parent, Some(theirs.span_id()), "{header}");
            assert_eq!(decision(header), Some(true));
        }
    }

    #[test]
    fn malformed_roots_are_refused() {
        for header in [
            "Root=1-abc;Sampled=1",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            "Root=1-5759e988-+d862e3fe1be46a99427279;Sampled=1",
            "Root=1-00000000-000000000000000000000000;Sampled=1",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz;Sampled=1",
        ] {
            assert!(parse(header).is_none(), "{header}");
        }
        assert_eq!(
            decision("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"),
            Some(false)
        );
        assert_eq!(decision("Root=1-5759e988-bd862e3fe1be46a994272793"), None);
    }

    #[test]
    fn reparenting_keeps_the_rest_and_writes_what_the_propagator_writes() {
        let span = SpanId::from(0x0123_4567_89ab_cdef_u64);
        let mut header = HEADER.to_owned();
        let sampled = parse(&header).unwrap();
        reparent(&mut header, &sampled, span);
        let context = SpanContext::new(
            sampled.trace_id,
            span,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        assert_eq!(header, span_context_to_string(&context).unwrap());

        let mut spaced = "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8;Sampled=1;Lineage=x:1".to_owned();
        let sampled = parse(&spaced).unwrap();
        reparent(&mut spaced, &sampled, span);
        assert_eq!(
            spaced,
            "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=0123456789abcdef;Sampled=1;Lineage=x:1"
        );

        // No parent yet (a producer's root only): a whole new header, same trace.
        let mut bare = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned();
        let sampled = parse(&bare).unwrap();
        reparent(&mut bare, &sampled, span);
        assert_eq!(bare, span_context_to_string(&context).unwrap());
    }

    #[test]
    fn the_canonical_read_agrees_with_the_general_one() {
        let mut headers = vec![
            HEADER.to_owned(),
            new_header(new_trace_id(0x5759_e988), new_span_id()),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".to_owned(),
            "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8;Sampled=1".to_owned(),
            "Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Sampled=1".to_owned(),
        ];
        // Every single-byte change of a canonical header, to each byte that matters to a
        // reader (digits, separators, letters of the keys, and one that is not ASCII).
        let base = HEADER.as_bytes();
        assert_eq!(base.len(), CANONICAL_LEN);
        for at in 0..base.len() {
            for b in [
                b'0', b'1', b'9', b'a', b'f', b'g', b'F', b'-', b';', b'=', b' ', b'R',
            ] {
                let mut changed = base.to_vec();
                changed[at] = b;
                headers.push(String::from_utf8(changed).unwrap());
            }
            let mut changed = String::from_utf8(base.to_vec()).unwrap();
            changed.replace_range(at..=at, "é");
            headers.push(changed);
        }
        let mut canonical_ones = 0;
        for header in &headers {
            let Some(read) = canonical(header) else {
                continue;
            };
            canonical_ones += 1;
            match decision(header) {
                Some(true) => assert_eq!(read, parse(header), "{header}"),
                Some(false) => assert_eq!(read, None, "{header}"),
                None => panic!("canonical but undecided: {header}"),
            }
        }
        assert!(canonical_ones > base.len(), "{canonical_ones}");
        assert_eq!(
            parse_hex("bd862e3fe1be46a994272793", 24),
            Some(0xbd86_2e3f_e1be_46a9_9427_2793)
        );
        assert_eq!(parse_hex("bd862e3fe1be46a99427279g", 24), None);
    }

    #[test]
    fn new_traces_start_with_the_time_and_read_back() {
        let id = new_trace_id(0x5759_e988);
        let span = new_span_id();
        let header = new_header(id, span);
        assert!(header.starts_with("Root=1-5759e988-"), "{header}");
        let back = span_context_from_str(&header).unwrap();
        assert_eq!(back.trace_id(), id);
        assert_eq!(back.span_id(), span);
        assert!(back.is_sampled());
        assert_ne!(new_trace_id(1), new_trace_id(1), "random below the time");
    }
}
