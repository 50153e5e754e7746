//! A third-party Confluent client against Riffle's registry, unmodified: the
//! `schema_registry_converter` crate registers the project's OrderPlaced schema, encodes a
//! value in the Confluent frame and decodes it again, talking to the Riffle registry served
//! on loopback (in-memory store). Riffle's own client and codec read what it wrote, and it
//! reads what Riffle registered, so the two sides agree on ids, subjects and bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use apache_avro::types::Value;
use riffle_registry_client::{CompatibilityLevel, Credentials, RegistryClient};
use riffle_schema_registry::auth::Auth;
use riffle_schema_registry::{MemoryStore, Registry, router, router_with_auth};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");
const ORDER_SUBJECT: &str = "com.riffle.shop.OrderPlaced";
const PAGE_VIEW: &str = include_str!("../../../schemas/events/page_view.avsc");
const PAGE_VIEW_SUBJECT: &str = "com.riffle.web.PageView";

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn order_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("order_id", Value::String("ord-0123456789ab".into())),
        ("customer_id", Value::String("cus-000042".into())),
        ("product_id", Value::String("sku-0007".into())),
        ("quantity", Value::Int(3)),
        ("unit_price", Value::Double(19.5)),
        ("currency", Value::Enum(1, "USD".into())),
        (
            "coupon",
            Value::Union(1, Box::new(Value::String("SPRING24".into()))),
        ),
        ("placed_at", Value::TimestampMillis(1_700_000_000_000)),
        (
            "attributes",
            Value::Map(HashMap::from([(
                "channel".to_owned(),
                Value::String("app".into()),
            )])),
        ),
    ]
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn supplied_order() -> SubjectNameStrategy {
    SubjectNameStrategy::RecordNameStrategyWithSchema(SuppliedSchema::new(
        Some(ORDER_SUBJECT.into()),
        SchemaType::Avro,
        ORDER.into(),
    ))
}

#[tokio::test]
async fn converter_registers_encodes_and_decodes_against_riffle() {
    let registry = Registry::new(MemoryStore::new());
    let url = serve(router(registry)).await;
    let riffle = RegistryClient::new(&url).unwrap();
    riffle
        .set_config(None, CompatibilityLevel::Backward)
        .await
        .unwrap();

    let encoder = AvroEncoder::new(SrSettings::new(url.clone()));
    let bytes = encoder
        .encode(order_fields(), supplied_order())
        .await
        .unwrap();

    // The converter's record-name subject is the project's subject, and Riffle sees the
    // registration it made under the id the frame carries.
    let (id, body) = riffle_codec::frame::split(&bytes).unwrap();
    let registered = riffle.lookup(ORDER_SUBJECT, ORDER).await.unwrap();
    assert_eq!((registered.id, registered.version), (id, 1));
    assert_eq!(riffle.subjects().await.unwrap(), [ORDER_SUBJECT]);

    // Riffle's own reader understands the body.
    let compiled =
        riffle_codec::CompiledSchema::parse(id, &riffle.schema_by_id(id).await.unwrap()).unwrap();
    let mut json = String::new();
    riffle_codec::datum::to_json(&compiled, body, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["order_id"], "ord-0123456789ab");
    assert_eq!(json["currency"], "USD");
    assert_eq!(json["coupon"], "SPRING24");

    // And the converter decodes it back, fetching the schema by id from Riffle.
    let decoder = AvroDecoder::new(SrSettings::new(url.clone()));
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    assert_eq!(decoded.value, record(order_fields()));
    assert_eq!(
        decoded.name.map(|n| n.fullname(None)).as_deref(),
        Some(ORDER_SUBJECT)
    );

    // Encoding the same schema again is idempotent on Riffle's side.
    let again = encoder
        .encode(order_fields(), supplied_order())
        .await
        .unwrap();
    assert_eq!(again, bytes);
    assert_eq!(riffle.versions(ORDER_SUBJECT).await.unwrap(), [1]);
}

#[tokio::test]
async fn converter_uses_what_riffle_registered_with_credentials() {
    let auth = Auth::basic(vec![("producer".into(), "pw".into())]);
    let url = serve(router_with_auth(Registry::new(MemoryStore::new()), auth)).await;
    let riffle = RegistryClient::new(&url)
        .unwrap()
        .with_credentials(Some(Credentials::Basic {
            user: "producer".into(),
            password: "pw".into(),
        }));
    let id = riffle.register(PAGE_VIEW_SUBJECT, PAGE_VIEW).await.unwrap();

    let settings = || {
        SrSettings::new_builder(url.clone())
            .set_basic_authorization("producer", Some("pw"))
            .build()
            .unwrap()
    };
    // No schema supplied: the converter looks up the subject's latest version.
    let fields = vec![
        ("session_id", Value::String("s-1".into())),
        ("user_id", Value::Union(0, Box::new(Value::Null))),
        ("path", Value::String("/pricing".into())),
        (
            "referrer",
            Value::Union(1, Box::new(Value::String("/".into()))),
        ),
        ("device", Value::Enum(1, "MOBILE".into())),
        ("dwell_ms", Value::Long(1200)),
        ("viewed_at", Value::TimestampMillis(1_700_000_000_000)),
        ("utm", Value::Map(HashMap::new())),
    ];
    let encoder = AvroEncoder::new(settings());
    let bytes = encoder
        .encode(
            fields.clone(),
            SubjectNameStrategy::RecordNameStrategy(PAGE_VIEW_SUBJECT.into()),
        )
        .await
        .unwrap();
    assert_eq!(riffle_codec::frame::split(&bytes).unwrap().0, id);
    let decoded = AvroDecoder::new(settings())
        .decode(Some(&bytes))
        .await
        .unwrap();
    assert_eq!(decoded.value, record(fields));

    // Without credentials the converter is refused, as any client is.
    let anonymous = AvroDecoder::new(SrSettings::new(url.clone()));
    assert!(anonymous.decode(Some(&bytes)).await.is_err());
}
