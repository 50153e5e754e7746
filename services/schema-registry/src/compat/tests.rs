//! Unit tests of the compatibility checks: each rule of schema resolution on small schemas,
//! the levels' choice of versions and directions, and the project's own schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use riffle_codec::compatibility::CompatibilityLevel::{self, *};

use super::*;

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"User","namespace":"riffle","fields":[{fields}]}}"#)
}

const ID: &str = r#"{"name":"id","type":"long"}"#;

fn ok(reader: &str, writer: &str) -> bool {
    can_read(reader, writer).unwrap().is_empty()
}

#[test]
fn adding_a_field() {
    let v1 = record(ID);
    let with_default = record(&format!(
        r#"{ID},{{"name":"email","type":["null","string"],"default":null}}"#
    ));
    let without_default = record(&format!(r#"{ID},{{"name":"email","type":"string"}}"#));
    // The new reader fills the missing field from its default...
    assert!(ok(&with_default, &v1));
    // ...and cannot without one.
    let messages = can_read(&without_default, &v1).unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].starts_with("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/email"),
        "{messages:?}"
    );
    // The old reader skips the new field either way.
    assert!(ok(&v1, &with_default) && ok(&v1, &without_default));
}

#[test]
fn removing_a_field() {
    let v1 = record(&format!(r#"{ID},{{"name":"name","type":"string"}}"#));
    let v1_default = record(&format!(
        r#"{ID},{{"name":"name","type":"string","default":""}}"#
    ));
    let v2 = record(ID);
    // New reader without the field: fine backward.
    assert!(ok(&v2, &v1));
    // Old reader of new data: needs the default it had.
    assert!(!ok(&v1, &v2));
    assert!(ok(&v1_default, &v2));
    assert!(check(Full, &v2, &[&v1_default]).unwrap().is_empty());
    assert_eq!(check(Full, &v2, &[&v1]).unwrap().len(), 1);
}

#[test]
fn numeric_promotions_and_their_reverse() {
    let int = record(r#"{"name":"n","type":"int"}"#);
    let long = record(r#"{"name":"n","type":"long"}"#);
    let float = record(r#"{"name":"n","type":"float"}"#);
    let double = record(r#"{"name":"n","type":"double"}"#);
    assert!(ok(&long, &int) && ok(&float, &int) && ok(&double, &int));
    assert!(ok(&float, &long) && ok(&double, &long) && ok(&double, &float));
    assert!(!ok(&int, &long) && !ok(&long, &float) && !ok(&float, &double));
    let messages = can_read(&int, &long).unwrap();
    assert_eq!(
        messages,
        vec!["TYPE_MISMATCH at /fields/n: reader type int cannot read writer type long"]
    );
    // int -> long is backward compatible but not forward.
    assert!(check(Backward, &long, &[&int]).unwrap().is_empty());
    assert!(!check(Forward, &long, &[&int]).unwrap().is_empty());
    assert!(ok(r#""string""#, r#""bytes""#) && ok(r#""bytes""#, r#""string""#));
    assert!(!ok(r#""string""#, r#""int""#));
    // Logical types read as their underlying type.
    assert!(ok(
        r#"{"type":"long","logicalType":"timestamp-millis"}"#,
        r#""int""#
    ));
}

#[test]
fn enum_symbols() {
    let e = |symbols: &str, default: &str| {
        format!(r#"{{"type":"enum","name":"Color","symbols":[{symbols}]{default}}}"#)
    };
    let two = e(r#""RED","GREEN""#, "");
    let three = e(r#""RED","GREEN","BLUE""#, "");
    let three_default = e(r#""RED","GREEN","BLUE""#, r#","default":"RED""#);
    let two_default = e(r#""RED","GREEN""#, r#","default":"RED""#);
    // Symbol added: new reads old; old cannot read BLUE.
    assert!(ok(&three, &two));
    let messages = can_read(&two, &three).unwrap();
    assert!(
        messages[0].starts_with("MISSING_ENUM_SYMBOLS") && messages[0].contains("BLUE"),
        "{messages:?}"
    );
    // A reader default absorbs unknown symbols.
    assert!(ok(&two_default, &three));
    // Symbol removed: the mirror image.
    assert!(!ok(&two, &three_default));
    assert!(ok(&three_default, &two));
}

#[test]
fn unions_widened_and_narrowed() {
    let narrow = record(r#"{"name":"v","type":["null","string"]}"#);
    let wide = record(r#"{"name":"v","type":["null","string","long"]}"#);
    let plain = record(r#"{"name":"v","type":"string"}"#);
    assert!(ok(&wide, &narrow));
    let messages = can_read(&narrow, &wide).unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("MISSING_UNION_BRANCH at /fields/v")),
        "{messages:?}"
    );
    // Non-union writer against a union reader, and the other way round.
    assert!(ok(&narrow, &plain));
    assert!(!ok(&plain, &narrow));
    // A branch found through promotion.
    assert!(!ok(
        r#"["null","double"]"#,
        r#"{"type":"record","name":"X","fields":[]}"#
    ));
    assert!(ok(r#"["null","double"]"#, r#""int""#));
    assert!(ok(r#""long""#, r#"["int","long"]"#));
}

#[test]
fn renames_through_aliases() {
    let old = r#"{"type":"record","name":"Person","namespace":"a","fields":[{"name":"name","type":"string"}]}"#;
    let renamed_field = r#"{"type":"record","name":"Person","namespace":"a","fields":[{"name":"full_name","type":"string","aliases":["name"]}]}"#;
    let renamed_record = r#"{"type":"record","name":"Human","namespace":"a","aliases":["Person"],"fields":[{"name":"name","type":"string"}]}"#;
    let renamed_bare = r#"{"type":"record","name":"Human","namespace":"a","fields":[{"name":"name","type":"string"}]}"#;
    assert!(ok(renamed_field, old));
    assert!(ok(renamed_record, old));
    // The alias lives on the reader: the old schema cannot read the renamed one.
    assert!(!ok(old, renamed_field));
    assert!(!ok(old, renamed_record));
    let messages = can_read(renamed_bare, old).unwrap();
    assert!(
        messages[0].starts_with("NAME_MISMATCH at /"),
        "{messages:?}"
    );
    // A namespace move keeps the unqualified name: resolution allows it.
    assert!(ok(&old.replace("\"a\"", "\"b\""), old));
}

#[test]
fn nested_records_report_their_path() {
    let v1 = r#"{"type":"record","name":"Order","fields":[
        {"name":"customer","type":{"type":"record","name":"Customer","fields":[{"name":"id","type":"long"}]}},
        {"name":"lines","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"qty","type":"int"}]}}},
        {"name":"tags","type":{"type":"map","values":"Customer"}}]}"#;
    let v2 = v1.replace(
        r#"{"name":"qty","type":"int"}"#,
        r#"{"name":"qty","type":"int"},{"name":"sku","type":"string"}"#,
    );
    let messages = can_read(&v2, v1).unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("/fields/lines/items/fields/sku"),
        "{messages:?}"
    );
    let v3 = v1.replace(r#""type":"long"}]}}"#, r#""type":"int"}]}}"#);
    let messages = can_read(&v3, v1).unwrap();
    // The customer record is used twice: both places are reported, the second by reference
    // to the first (a named pair is compared once).
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("/fields/customer/fields/id"));
    assert!(
        messages[1].contains("at /fields/tags/values:")
            && messages[1].contains("as at /fields/customer"),
        "{messages:?}"
    );
    assert!(ok(v1, &v3));
}

#[test]
fn recursive_types_terminate() {
    let list = r#"{"type":"record","name":"Node","fields":[{"name":"value","type":"int"},{"name":"next","type":["null","Node"]}]}"#;
    let wider = list.replace(r#""type":"int""#, r#""type":"long""#);
    assert!(ok(list, list));
    assert!(ok(&wider, list));
    assert!(!ok(list, &wider));
}

#[test]
fn unreadable_texts_say_which_side() {
    let good = record(ID);
    assert!(matches!(
        check(Backward, r#""Unknown""#, &[&good]),
        Err(CompatError::New(_))
    ));
    assert!(matches!(
        check(Backward, &good, &["{"]),
        Err(CompatError::Existing(_))
    ));
}

#[test]
fn fixed_by_name_and_size() {
    let f = |name: &str, size: u32| format!(r#"{{"type":"fixed","name":"{name}","size":{size}}}"#);
    assert!(ok(&f("Hash", 16), &f("Hash", 16)));
    assert!(!ok(&f("Hash", 32), &f("Hash", 16)));
    assert!(!ok(&f("Other", 16), &f("Hash", 16)));
    assert!(!ok(&f("Hash", 16), r#""bytes""#));
}

#[test]
fn transitive_levels_look_at_every_version() {
    let v1 = record(ID);
    // v2 drops `id` for `name` with a default; v3 adds `id` back without a default.
    let v2 = record(r#"{"name":"name","type":"string","default":""}"#);
    let v3 = record(&format!(
        r#"{ID},{{"name":"name","type":"string","default":""}}"#
    ));
    // v3 reads v2 data? It needs `id`, which v2 lacks and v3 has no default for.
    assert!(!check(Backward, &v3, &[&v1, &v2]).unwrap().is_empty());
    let v4 = record(r#"{"name":"name","type":"string"}"#);
    // v4 reads v2 (latest) but not v1 (no `name` there, no default).
    assert!(check(Backward, &v4, &[&v1, &v2]).unwrap().is_empty());
    let transitive = check(BackwardTransitive, &v4, &[&v1, &v2]).unwrap();
    assert_eq!(transitive.len(), 1, "{transitive:?}");
    assert!(check(None, &v4, &[&v1]).unwrap().is_empty());
    assert!(check(FullTransitive, &v4, &[]).unwrap().is_empty());
}

#[test]
fn project_schemas_read_themselves() {
    for text in [
        include_str!("../../../../schemas/envelope.avsc"),
        include_str!("../../../../schemas/view_row.avsc"),
        include_str!("../../../../schemas/events/order_placed.avsc"),
        include_str!("../../../../schemas/events/page_view.avsc"),
        include_str!("../../../../schemas/events/sensor_reading.avsc"),
    ] {
        for level in CompatibilityLevel::ALL {
            assert!(check(level, text, &[text]).unwrap().is_empty(), "{text}");
        }
    }
}

#[test]
fn named_types_used_many_times_are_compared_once() {
    // Records each using the next twice, 30 deep (under 2 KB), then one optional field added:
    // compared pair by pair this took 4x per two levels (minutes at 30); each pair once, it
    // is immediate. Strings instead of nulls, so the registry's zero-byte check lets it by.
    let deep = |extra: &str| {
        let mut schema =
            r#"{"type":"record","name":"L0","fields":[{"name":"s","type":"string"}]}"#.to_owned();
        for level in 1..=30 {
            let more = if level == 30 { extra } else { "" };
            schema = format!(
                r#"{{"type":"record","name":"L{level}","fields":[{{"name":"a","type":{schema}}},{{"name":"b","type":"L{}"}}{more}]}}"#,
                level - 1
            );
        }
        schema
    };
    let v1 = deep("");
    let v2 = deep(r#",{"name":"note","type":["null","string"],"default":null}"#);
    let started = std::time::Instant::now();
    assert!(check(Backward, &v2, &[&v1]).unwrap().is_empty());
    assert!(check(Full, &v2, &[&v1]).unwrap().is_empty());
    // An incompatible change deep down is still found, and reported where each use meets it.
    let v3 = v1.replace(r#""type":"string""#, r#""type":"int""#);
    let messages = check(Backward, &v3, &[&v1]).unwrap();
    assert!(!messages.is_empty());
    assert!(messages.len() < 100, "{} messages", messages.len());
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_verdict_reached_inside_a_failed_union_trial_is_not_reused() {
    // The reader's union tries ns1.A first; comparing it meets (ns1.Q, Q) while (ns1.A, A) is
    // assumed compatible, then ns1.A fails on `h`. Field `k` reads the writer's Q with ns1.Q
    // again: a cached "compatible" from the failed trial would hide that Q.back holds an A
    // whose `h` is a string the reader's ns1.A reads as an int.
    let writer = r#"{"type":"record","name":"Top","fields":[
        {"name":"f","type":{"type":"record","name":"A","fields":[
            {"name":"h","type":"string"},
            {"name":"g","type":{"type":"record","name":"Q","fields":[{"name":"back","type":["null","A"]}]}}]}},
        {"name":"k","type":"Q"}]}"#;
    let reader = r#"{"type":"record","name":"Top","fields":[
        {"name":"f","type":[
            {"type":"record","name":"A","namespace":"ns1","fields":[
                {"name":"h","type":"int"},
                {"name":"g","type":{"type":"record","name":"Q","namespace":"ns1","fields":[{"name":"back","type":["null","ns1.A"]}]}}]},
            {"type":"record","name":"A","namespace":"ns2","fields":[{"name":"h","type":"string"}]}]},
        {"name":"k","type":"ns1.Q"}]}"#;
    let messages = can_read(reader, writer).unwrap();
    assert!(!messages.is_empty(), "an unreadable k.back passed");
}
