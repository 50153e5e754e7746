//! Fuzz target: arbitrary bytes as a record read from a stream.
//!
//! Checks that framing and envelope decoding never panic, that the hand-written reader of our
//! own envelope version agrees with the schema-driven serde reader on every body (both accept
//! the same bytes and read the same envelope), and that whatever decodes re-encodes to bytes
//! that decode to the same envelope.

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::{CompiledSchema, Envelope, EnvelopeCodec, frame};
use riffle_fuzz::{ENVELOPE_ID, LEARNED_ENVELOPE_ID, same_envelope};

struct State {
    codec: EnvelopeCodec,
    serde: CompiledSchema,
}

static STATE: LazyLock<State> = LazyLock::new(|| {
    let (Ok(codec), Ok(serde), Ok(learned)) = (
        EnvelopeCodec::new(ENVELOPE_ID),
        CompiledSchema::parse(ENVELOPE_ID, ENVELOPE_SCHEMA),
        CompiledSchema::parse(LEARNED_ENVELOPE_ID, ENVELOPE_SCHEMA),
    ) else {
        panic!("the bundled envelope schema does not parse");
    };
    // A learned version takes the serde path inside `decode`, so both paths see framed input.
    codec.learn(Arc::new(learned));
    State { codec, serde }
});

fuzz_target!(|data: &[u8]| {
    let state = &*STATE;

    // The whole record, as a stage would see it: aggregate check, framing, either reader.
    let decoded = state.codec.decode(data);
    if let Ok(env) = &decoded {
        assert_round_trips(&state.codec, env);
    }

    let Ok((id, body)) = frame::split(data) else {
        return;
    };
    assert_eq!(id.to_be_bytes(), data[1..5], "schema id");
    assert_eq!(body, &data[frame::HEADER_LEN..], "body");

    // The same body through both readers of the bundled version.
    let mut ours = Vec::with_capacity(data.len());
    frame::write_header(&mut ours, ENVELOPE_ID);
    ours.extend_from_slice(body);
    let by_hand = state.codec.decode(&ours);
    let by_serde = state.serde.decode::<Envelope>(body);
    match (&by_hand, &by_serde) {
        (Ok(a), Ok(b)) => assert!(same_envelope(a, b), "readers disagree:\n{a:?}\n{b:?}"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("only one reader accepts:\nhand:  {a:?}\nserde: {b:?}"),
    }
});

fn assert_round_trips(codec: &EnvelopeCodec, env: &Envelope) {
    let bytes = match codec.encode(env) {
        Ok(b) => b,
        Err(e) => panic!("decoded envelope does not encode: {e}\n{env:?}"),
    };
    match codec.decode(&bytes) {
        Ok(again) => assert!(same_envelope(env, &again), "{env:?}\n{again:?}"),
        Err(e) => panic!("re-encoded envelope does not decode: {e}\n{env:?}"),
    }
}
