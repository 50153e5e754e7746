//! The DynamoDB [`SchemaStore`]: one table, hash key `pk` (S), range key `sk` (S).
//!
//! Items (versions zero-padded to 10 digits so they sort as numbers):
//!
//! | pk | sk | attributes | role |
//! |---|---|---|---|
//! | `COUNTER` | `ID` | `n` | last allocated id (atomic `ADD`) |
//! | `ID#<id>` | `SCHEMA` | `id schema fp type` | the schema of an id |
//! | `FP#<fp>` | `ID` | `id` | fingerprint -> id, written once (`attribute_not_exists`) |
//! | `SUBJECT#<s>` | `V#<version>` | `subject version id schema fp` | one version |
//! | `SUBJECT#<s>` | `FP#<fp>` | `version id` | a schema's version in the subject, written once |
//! | `SUBJECTS` | `<s>` | `subject` | the subject listing, without a scan |
//! | `ID#<id>` | `USE#<s>#V#<version>` | `subject version` | where an id is used |
//!
//! A version and its subject fingerprint entry are written in one transaction, both
//! conditional, so a subject never holds one schema twice nor one version number twice.
//! Every read is strongly consistent: registration reads what it (or a rival) just wrote.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};

use super::{Append, Claim, SchemaRecord, SchemaStore, VersionRecord};
use crate::error::{Error, Result};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const NOT_EXISTS: &str = "attribute_not_exists(pk)";

/// Subjects and schemas in a DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store over `table`, reached through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get(&self, op: &'static str, pk: String, sk: String) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk))
            .key(SK, AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(op, e))?;
        Ok(out.item)
    }

    /// All items of `pk` (whose sort key starts with `prefix`, if given), ascending, across
    /// pages. DynamoDB refuses an empty prefix, hence the option.
    async fn query(&self, op: &'static str, pk: String, prefix: Option<&str>) -> Result<Vec<Item>> {
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(pk))]);
        let condition = match prefix {
            Some(prefix) => {
                values.insert(":prefix".to_owned(), AttributeValue::S(prefix.to_owned()));
                "pk = :pk AND begins_with(sk, :prefix)"
            }
            None => "pk = :pk",
        };
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(op, e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_owned))
            .build()
            .map_err(|e| Error::Store {
                op: "append_version",
                message: e.to_string(),
                retryable: false,
            })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

fn subject_pk(subject: &str) -> String {
    format!("SUBJECT#{subject}")
}

fn id_pk(id: u32) -> String {
    format!("ID#{id}")
}

fn version_sk(version: u32) -> String {
    format!("V#{version:010}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u32) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn item<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Reads a string attribute; a missing or mistyped one means a corrupt item.
fn get_s(item: &Item, name: &str) -> Result<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(corrupt(name)),
    }
}

fn get_n(item: &Item, name: &str) -> Result<u32> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| corrupt(name)),
        _ => Err(corrupt(name)),
    }
}

fn corrupt(name: &str) -> Error {
    Error::Store {
        op: "decode",
        message: format!("item lacks a valid `{name}` attribute"),
        retryable: false,
    }
}

fn version_record(item: &Item) -> Result<VersionRecord> {
    Ok(VersionRecord {
        subject: get_s(item, "subject")?,
        version: get_n(item, "version")?,
        id: get_n(item, "id")?,
        schema: get_s(item, "schema")?,
        fingerprint: get_s(item, "fp")?,
    })
}

/// Error codes DynamoDB uses for load it sheds; the same call succeeds later.
const RETRYABLE_CODES: [&str; 5] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
];

fn sdk_error<E, R>(op: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
        _ => false,
    };
    Error::Store {
        op,
        message: DisplayErrorContext(&err).to_string(),
        retryable,
    }
}

impl SchemaStore for DynamoStore {
    async fn schema_by_id(&self, id: u32) -> Result<Option<SchemaRecord>> {
        let Some(item) = self.get("schema_by_id", id_pk(id), "SCHEMA".into()).await? else {
            return Ok(None);
        };
        Ok(Some(SchemaRecord {
            id: get_n(&item, "id")?,
            schema: get_s(&item, "schema")?,
            fingerprint: get_s(&item, "fp")?,
            schema_type: get_s(&item, "type")?,
        }))
    }

    async fn id_by_fingerprint(&self, fingerprint: &str) -> Result<Option<u32>> {
        self.get(
            "id_by_fingerprint",
            format!("FP#{fingerprint}"),
            "ID".into(),
        )
        .await?
        .map(|item| get_n(&item, "id"))
        .transpose()
    }

    async fn allocate_id(&self) -> Result<u32> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s("COUNTER"))
            .key(SK, s("ID"))
            .update_expression("ADD #n :one")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error("allocate_id", e))?;
        get_n(&out.attributes.unwrap_or_default(), "n")
    }

    async fn put_schema(&self, record: &SchemaRecord) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([
                (PK, s(id_pk(record.id))),
                (SK, s("SCHEMA")),
                ("id", n(record.id)),
                ("schema", s(&record.schema)),
                ("fp", s(&record.fingerprint)),
                ("type", s(&record.schema_type)),
            ])))
            .send()
            .await
            .map_err(|e| sdk_error("put_schema", e))?;
        Ok(())
    }

    async fn delete_schema(&self, id: u32) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(id_pk(id)))
            .key(SK, s("SCHEMA"))
            .send()
            .await
            .map_err(|e| sdk_error("delete_schema", e))?;
        Ok(())
    }

    async fn claim_fingerprint(&self, fingerprint: &str, id: u32) -> Result<Claim> {
        let pk = format!("FP#{fingerprint}");
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([(PK, s(&pk)), (SK, s("ID")), ("id", n(id))])))
            .condition_expression(NOT_EXISTS)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claim::Won),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let winner = self
                    .get("claim_fingerprint", pk, "ID".into())
                    .await?
                    .ok_or_else(|| Error::Store {
                        op: "claim_fingerprint",
                        message: "fingerprint claimed but unreadable".into(),
                        retryable: true,
                    })?;
                Ok(Claim::Taken(get_n(&winner, "id")?))
            }
            Err(e) => Err(sdk_error("claim_fingerprint", e)),
        }
    }

    async fn version_by_fingerprint(
        &self,
        subject: &str,
        fingerprint: &str,
    ) -> Result<Option<VersionRecord>> {
        let Some(entry) = self
            .get(
                "version_by_fingerprint",
                subject_pk(subject),
                format!("FP#{fingerprint}"),
            )
            .await?
        else {
            return Ok(None);
        };
        // Both items were written in one transaction, so the version is there.
        self.version(subject, get_n(&entry, "version")?).await
    }

    async fn latest_version(&self, subject: &str) -> Result<Option<u32>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(subject_pk(subject)))
            .expression_attribute_values(":prefix", s("V#"))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("latest_version", e))?;
        out.items
            .unwrap_or_default()
            .first()
            .map(|item| get_n(item, "version"))
            .transpose()
    }

    async fn append_version(&self, record: &VersionRecord) -> Result<Append> {
        let pk = subject_pk(&record.subject);
        let version = self.put(
            item([
                (PK, s(&pk)),
                (SK, s(version_sk(record.version))),
                ("subject", s(&record.subject)),
                ("version", n(record.version)),
                ("id", n(record.id)),
                ("schema", s(&record.schema)),
                ("fp", s(&record.fingerprint)),
            ]),
            Some(NOT_EXISTS),
        )?;
        let fingerprint = self.put(
            item([
                (PK, s(&pk)),
                (SK, s(format!("FP#{}", record.fingerprint))),
                ("version", n(record.version)),
                ("id", n(record.id)),
            ]),
            Some(NOT_EXISTS),
        )?;
        let listing = self.put(
            item([
                (PK, s("SUBJECTS")),
                (SK, s(&record.subject)),
                ("subject", s(&record.subject)),
            ]),
            None,
        )?;
        let usage = self.put(
            item([
                (PK, s(id_pk(record.id))),
                (
                    SK,
                    s(format!(
                        "USE#{}#{}",
                        record.subject,
                        version_sk(record.version)
                    )),
                ),
                ("subject", s(&record.subject)),
                ("version", n(record.version)),
            ]),
            None,
        )?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(version)
            .transact_items(fingerprint)
            .transact_items(listing)
            .transact_items(usage)
            .send()
            .await;
        match out {
            Ok(_) => Ok(Append::Appended),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    TransactWriteItemsError::TransactionCanceledException(cancel)
                        if cancel.cancellation_reasons().iter().any(|r| matches!(
                            r.code(),
                            Some("ConditionalCheckFailed" | "TransactionConflict")
                        ))
                ) =>
            {
                Ok(Append::Conflict)
            }
            Err(e) => Err(sdk_error("append_version", e)),
        }
    }

    async fn version(&self, subject: &str, version: u32) -> Result<Option<VersionRecord>> {
        self.get("version", subject_pk(subject), version_sk(version))
            .await?
            .map(|item| version_record(&item))
            .transpose()
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        self.query("versions", subject_pk(subject), Some("V#"))
            .await?
            .iter()
            .map(|item| get_n(item, "version"))
            .collect()
    }

    async fn subjects(&self) -> Result<Vec<String>> {
        self.query("subjects", "SUBJECTS".into(), None)
            .await?
            .iter()
            .map(|item| get_s(item, "subject"))
            .collect()
    }

    async fn usages(&self, id: u32) -> Result<Vec<(String, u32)>> {
        let mut usages = self
            .query("usages", id_pk(id), Some("USE#"))
            .await?
            .iter()
            .map(|item| Ok((get_s(item, "subject")?, get_n(item, "version")?)))
            .collect::<Result<Vec<_>>>()?;
        usages.sort();
        Ok(usages)
    }
}
