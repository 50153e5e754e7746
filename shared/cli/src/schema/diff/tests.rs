//! Unit tests of the diff: identical schemas, fields added and removed, types and defaults
//! changed, enum symbols and field aliases, nested and recursive records, unions, and text
//! that is not JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;

use super::*;

const ORDER: &str = include_str!("../../../../../schemas/events/order_placed.avsc");
const ENVELOPE: &str = include_str!("../../../../../schemas/envelope.avsc");

/// `ORDER` with its JSON edited by `edit`.
fn order_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(ORDER).unwrap();
    edit(&mut v);
    v.to_string()
}

fn fields(v: &mut Value) -> &mut Vec<Value> {
    v["fields"].as_array_mut().unwrap()
}

#[test]
fn identical_schemas_have_no_differences() {
    assert_eq!(diff(ORDER, ORDER).unwrap(), vec![]);
    assert_eq!(diff(ENVELOPE, ENVELOPE).unwrap(), vec![]);
    assert_eq!(render(&[]), "no field-level differences\n");
}

#[test]
fn added_and_removed_fields() {
    let new = order_with(|v| {
        fields(v).retain(|f| f["name"] != "coupon");
        fields(v).push(serde_json::json!({"name": "channel", "type": "string"}));
        fields(v).push(serde_json::json!(
            {"name": "note", "type": ["null", "string"], "default": null}
        ));
    });
    assert_eq!(
        diff(ORDER, &new).unwrap(),
        vec![
            Change::Added {
                path: "channel".into(),
                ty: "string".into(),
                default: None
            },
            Change::Added {
                path: "note".into(),
                ty: "null | string".into(),
                default: Some("null".into())
            },
            Change::Removed {
                path: "coupon".into(),
                ty: "null | string".into()
            },
        ]
    );
    let text = render(&diff(ORDER, &new).unwrap());
    assert!(
        text.contains("+ added    channel: string (no default)"),
        "{text}"
    );
    assert!(text.contains("- removed  coupon: null | string"), "{text}");
}

#[test]
fn type_and_default_changes() {
    let new = order_with(|v| {
        for f in fields(v) {
            match f["name"].as_str() {
                Some("quantity") => f["type"] = "long".into(),
                Some("attributes") => f["default"] = serde_json::json!({"k": "v"}),
                Some("placed_at") => f["type"]["logicalType"] = "timestamp-micros".into(),
                _ => {}
            }
        }
    });
    assert_eq!(
        diff(ORDER, &new).unwrap(),
        vec![
            Change::TypeChanged {
                path: "quantity".into(),
                from: "int".into(),
                to: "long".into()
            },
            Change::TypeChanged {
                path: "placed_at".into(),
                from: "long (timestamp-millis)".into(),
                to: "long (timestamp-micros)".into()
            },
            Change::DefaultChanged {
                path: "attributes".into(),
                from: Some("{}".into()),
                to: Some(r#"{"k":"v"}"#.into())
            },
        ]
    );
}

#[test]
fn enum_symbols_and_field_aliases() {
    let new = order_with(|v| {
        for f in fields(v) {
            if f["name"] == "currency" {
                f["type"]["symbols"] = serde_json::json!(["EUR", "USD", "CHF"]);
            }
            if f["name"] == "coupon" {
                f["name"] = "voucher".into();
                f["aliases"] = serde_json::json!(["coupon"]);
            }
        }
    });
    assert_eq!(
        diff(ORDER, &new).unwrap(),
        vec![
            Change::SymbolsRemoved {
                path: "currency".into(),
                symbols: vec!["GBP".into()]
            },
            Change::SymbolsAdded {
                path: "currency".into(),
                symbols: vec!["CHF".into()]
            },
            Change::FieldRenamed {
                from: "coupon".into(),
                to: "voucher".into()
            },
        ]
    );
}

#[test]
fn nested_records_in_unions_are_followed() {
    let old = r#"{"type":"record","name":"E","namespace":"t","fields":[
        {"name":"enrichment","type":["null",{"type":"record","name":"Enr","fields":[
            {"name":"category","type":"string"}]}],"default":null},
        {"name":"again","type":["null","Enr"],"default":null}]}"#;
    let new = r#"{"type":"record","name":"E","namespace":"t","fields":[
        {"name":"enrichment","type":["null",{"type":"record","name":"Enr","fields":[
            {"name":"category","type":"int"},{"name":"region","type":"string","default":"eu"}]}],"default":null},
        {"name":"again","type":["null","t.Enr"],"default":null}]}"#;
    assert_eq!(
        diff(old, new).unwrap(),
        vec![
            Change::TypeChanged {
                path: "enrichment.category".into(),
                from: "string".into(),
                to: "int".into()
            },
            Change::Added {
                path: "enrichment.region".into(),
                ty: "string".into(),
                default: Some("\"eu\"".into())
            },
        ]
    );
}

#[test]
fn unions_that_change_branches_are_type_changes() {
    let new = order_with(|v| {
        for f in fields(v) {
            if f["name"] == "coupon" {
                f["type"] = serde_json::json!(["null", "string", "long"]);
            }
        }
    });
    assert_eq!(
        diff(ORDER, &new).unwrap(),
        vec![Change::TypeChanged {
            path: "coupon".into(),
            from: "null | string".into(),
            to: "null | string | long".into()
        }]
    );
}

#[test]
fn recursive_types_terminate_and_renames_show() {
    let node = |name: &str| {
        format!(
            r#"{{"type":"record","name":"{name}","fields":[{{"name":"next","type":["null","{name}"]}}]}}"#
        )
    };
    assert_eq!(diff(&node("Node"), &node("Node")).unwrap(), vec![]);
    assert_eq!(
        diff(&node("Node"), &node("Link")).unwrap(),
        vec![
            Change::Renamed {
                from: "Node".into(),
                to: "Link".into()
            },
            Change::TypeChanged {
                path: "next".into(),
                from: "null | Node".into(),
                to: "null | Link".into()
            },
        ]
    );
}

#[test]
fn not_json_is_an_error_naming_the_side() {
    let e = diff(ORDER, "{not json").unwrap_err();
    assert_eq!(e.which, "new");
}
