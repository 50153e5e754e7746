//! A DynamoDB table created from its template's shape (attributes, keys, global secondary
//! indexes), one builder for the local twin's provisioning and `riffle replay`'s new view.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};

/// A global secondary index as a template declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// `IndexName`.
    pub name: String,
    /// (attribute, HASH|RANGE)
    pub key_schema: Vec<(String, String)>,
    /// ALL, KEYS_ONLY or INCLUDE.
    pub projection_type: String,
    /// With INCLUDE: the attributes projected besides the keys.
    pub non_key_attributes: Vec<String>,
}

/// What a table is made of, borrowed from its spec.
#[derive(Debug, Clone, Copy)]
pub struct TableShape<'a> {
    /// (attribute, S|N|B), every key attribute of the table and its indexes.
    pub attributes: &'a [(String, String)],
    /// (attribute, HASH|RANGE)
    pub key_schema: &'a [(String, String)],
    /// Its global secondary indexes.
    pub global_indexes: &'a [IndexSpec],
}

fn keys(key_schema: &[(String, String)]) -> Result<Vec<KeySchemaElement>, String> {
    key_schema
        .iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// CreateTable for `name` with `shape`, on demand (PAY_PER_REQUEST), ready to send.
///
/// # Errors
/// A part of the shape the SDK refuses to build (an empty name), as text.
pub fn create_table(
    dynamo: &Client,
    name: &str,
    shape: TableShape<'_>,
) -> Result<CreateTableFluentBuilder, String> {
    let mut request = dynamo
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(shape.key_schema)?));
    for (name, kind) in shape.attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    for index in shape.global_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection_type.as_str()))
            .set_non_key_attributes(
                (!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()),
            )
            .build();
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(keys(&index.key_schema)?))
                .projection(projection)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(request)
}
