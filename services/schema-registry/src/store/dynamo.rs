//! The DynamoDB [`SchemaStore`]: one table, hash key `pk` (S), range key `sk` (S).
//!
//! Items (versions zero-padded to 10 digits so they sort as numbers):
//!
//! | pk | sk | attributes | role |
//! |---|---|---|---|
//! | `COUNTER` | `ID` | `n` | last allocated id (atomic `ADD`) |
//! | `ID#<id>` | `SCHEMA` | `id schema fp type [contract]` | the schema of an id |
//! | `FP#<fp>` | `ID` | `id` | fingerprint -> id, written once (`attribute_not_exists`) |
//! | `SUBJECT#<s>` | `V#<version>` | `subject version id schema fp [contract] [deleted]` | one version |
//! | `SUBJECT#<s>` | `FP#<fp>` | `version id` | a schema's live version in the subject |
//! | `SUBJECT#<s>` | `CONFIG` | `level` | the subject's compatibility level |
//! | `SUBJECTS` | `<s>` | `subject live kept` | the subject listing, without a scan |
//! | `ID#<id>` | `USE#<s>#V#<version>` | `subject version [deleted]` | where an id is used |
//! | `CONFIG` | `GLOBAL` | `level` | the global compatibility level |
//!
//! A version and its subject fingerprint entry are written in one transaction, both
//! conditional, so a subject never holds one schema twice nor one version number twice.
//! Every read is strongly consistent: registration reads what it (or a rival) just wrote.
//! `contract` is the schema's data-contract fields (`metadata`, `ruleSet`) as JSON text,
//! absent when it has none (ADR 0020).
//!
//! Deletion: a soft delete sets `deleted` (BOOL) on the version and its usage item, removes
//! the subject's `FP#` entry (so the schema may be registered again, as a new version) and
//! counts the version out of `live`, in one transaction conditional on the version being
//! live. A permanent delete removes the version and usage items and counts it out of
//! `kept`, conditional on `deleted`. The listing's `live` and `kept` counters (`ADD`, so
//! concurrent writers need no read) let `GET /subjects` filter without reading versions; a
//! listing item without counters (written before they existed) is checked against its
//! versions instead.

use riffle_codec::registered::DataContract;
use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use riffle_codec::compatibility::CompatibilityLevel;

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
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// One update in a transaction; `values` are the expression's `:name` values.
    fn update<const N: usize>(
        &self,
        key: (String, String),
        expression: &str,
        condition: Option<&str>,
        values: [(&str, AttributeValue); N],
    ) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(key.0))
            .key(SK, s(key.1))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values(Some(item(values)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// One delete in a transaction; `values` are the condition's `:name` values.
    fn delete<const N: usize>(
        &self,
        key: (String, String),
        condition: Option<&str>,
        values: [(&str, AttributeValue); N],
    ) -> Result<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(PK, s(key.0))
            .key(SK, s(key.1))
            .set_condition_expression(condition.map(str::to_owned))
            .set_expression_attribute_values((N > 0).then(|| item(values)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Runs `items` as one transaction; `false` when a condition (or a rival transaction)
    /// cancelled it.
    async fn transact(&self, op: &'static str, items: Vec<TransactWriteItem>) -> Result<bool> {
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
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
                Ok(false)
            }
            Err(e) => Err(sdk_error(op, e)),
        }
    }

    async fn level(&self, pk: String, sk: &str) -> Result<Option<CompatibilityLevel>> {
        self.get("config", pk, sk.into())
            .await?
            .map(|item| level(&item))
            .transpose()
    }
}

fn build_error(e: impl std::fmt::Display) -> Error {
    Error::Store {
        op: "build_request",
        message: e.to_string(),
        retryable: false,
    }
}

fn level(item: &Item) -> Result<CompatibilityLevel> {
    get_s(item, "level")?.parse().map_err(|_| corrupt("level"))
}

/// Where a level is kept: the subject's `CONFIG` item, or the global one.
fn config_key(subject: Option<&str>) -> (String, String) {
    match subject {
        Some(subject) => (subject_pk(subject), "CONFIG".into()),
        None => ("CONFIG".into(), "GLOBAL".into()),
    }
}

fn usage_sk(subject: &str, version: u32) -> String {
    format!("USE#{subject}#{}", version_sk(version))
}

fn deleted(item: &Item) -> bool {
    matches!(item.get("deleted"), Some(AttributeValue::Bool(true)))
}

/// A counter of the listing item, if the item has it.
fn counter(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
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
        deleted: deleted(item),
        contract: get_contract(item)?,
    })
}

/// The attribute holding a schema's data-contract fields as JSON; absent when it has none
/// (every item written before contracts were stored).
const CONTRACT: &str = "contract";

fn get_contract(item: &Item) -> Result<DataContract> {
    match item.get(CONTRACT) {
        None => Ok(DataContract::default()),
        Some(AttributeValue::S(v)) => serde_json::from_str(v).map_err(|_| corrupt(CONTRACT)),
        Some(_) => Err(corrupt(CONTRACT)),
    }
}

/// `item` with the contract attribute added when there is a contract.
fn with_contract(mut item: Item, contract: &DataContract) -> Item {
    if !contract.is_empty() {
        // Serializing a JSON value to a string cannot fail.
        let text = serde_json::to_string(contract).unwrap_or_default();
        item.insert(CONTRACT.to_owned(), s(text));
    }
    item
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
            contract: get_contract(&item)?,
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
            .set_item(Some(with_contract(
                item([
                    (PK, s(id_pk(record.id))),
                    (SK, s("SCHEMA")),
                    ("id", n(record.id)),
                    ("schema", s(&record.schema)),
                    ("fp", s(&record.fingerprint)),
                    ("type", s(&record.schema_type)),
                ]),
                &record.contract,
            )))
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

    async fn latest(&self, subject: &str) -> Result<Option<VersionRecord>> {
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
            .map_err(|e| sdk_error("latest", e))?;
        out.items
            .unwrap_or_default()
            .first()
            .map(version_record)
            .transpose()
    }

    async fn append_version(&self, record: &VersionRecord) -> Result<Append> {
        let pk = subject_pk(&record.subject);
        let version = self.put(
            with_contract(
                item([
                    (PK, s(&pk)),
                    (SK, s(version_sk(record.version))),
                    ("subject", s(&record.subject)),
                    ("version", n(record.version)),
                    ("id", n(record.id)),
                    ("schema", s(&record.schema)),
                    ("fp", s(&record.fingerprint)),
                ]),
                &record.contract,
            ),
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
        let listing = self.update(
            ("SUBJECTS".into(), record.subject.clone()),
            "SET subject = :s ADD live :one, kept :one",
            None,
            [(":s", s(&record.subject)), (":one", n(1))],
        )?;
        let usage = self.put(
            item([
                (PK, s(id_pk(record.id))),
                (SK, s(usage_sk(&record.subject, record.version))),
                ("subject", s(&record.subject)),
                ("version", n(record.version)),
            ]),
            None,
        )?;
        let appended = self
            .transact("append_version", vec![version, fingerprint, listing, usage])
            .await?;
        Ok(if appended {
            Append::Appended
        } else {
            Append::Conflict
        })
    }

    async fn version(&self, subject: &str, version: u32) -> Result<Option<VersionRecord>> {
        self.get("version", subject_pk(subject), version_sk(version))
            .await?
            .map(|item| version_record(&item))
            .transpose()
    }

    async fn versions(&self, subject: &str) -> Result<Vec<VersionRecord>> {
        self.query("versions", subject_pk(subject), Some("V#"))
            .await?
            .iter()
            .map(version_record)
            .collect()
    }

    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        let mut subjects = Vec::new();
        for listed in self.query("subjects", "SUBJECTS".into(), None).await? {
            let subject = get_s(&listed, "subject")?;
            let counted = if include_deleted {
                counter(&listed, "kept")
            } else {
                counter(&listed, "live")
            };
            let listed = match counted {
                Some(count) => count > 0,
                None => self
                    .versions(&subject)
                    .await?
                    .iter()
                    .any(|v| include_deleted || !v.deleted),
            };
            if listed {
                subjects.push(subject);
            }
        }
        Ok(subjects)
    }

    async fn usages(&self, id: u32, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        let mut usages = self
            .query("usages", id_pk(id), Some("USE#"))
            .await?
            .iter()
            .filter(|item| include_deleted || !deleted(item))
            .map(|item| Ok((get_s(item, "subject")?, get_n(item, "version")?)))
            .collect::<Result<Vec<_>>>()?;
        usages.sort();
        Ok(usages)
    }

    async fn soft_delete_version(&self, record: &VersionRecord) -> Result<bool> {
        let pk = subject_pk(&record.subject);
        let version = self.update(
            (pk.clone(), version_sk(record.version)),
            "SET deleted = :t",
            Some("attribute_exists(pk) AND (attribute_not_exists(deleted) OR deleted = :f)"),
            [
                (":t", AttributeValue::Bool(true)),
                (":f", AttributeValue::Bool(false)),
            ],
        )?;
        // Only the entry of this version: the invariant says no other can hold the
        // fingerprint, and the condition keeps a broken invariant from spreading.
        let fingerprint = self.delete(
            (pk, format!("FP#{}", record.fingerprint)),
            Some("attribute_not_exists(pk) OR version = :v"),
            [(":v", n(record.version))],
        )?;
        let listing = self.update(
            ("SUBJECTS".into(), record.subject.clone()),
            "ADD live :minus",
            None,
            [(":minus", AttributeValue::N("-1".into()))],
        )?;
        let usage = self.update(
            (id_pk(record.id), usage_sk(&record.subject, record.version)),
            "SET deleted = :t",
            None,
            [(":t", AttributeValue::Bool(true))],
        )?;
        self.transact(
            "soft_delete_version",
            vec![version, fingerprint, listing, usage],
        )
        .await
    }

    async fn hard_delete_version(&self, record: &VersionRecord) -> Result<bool> {
        let version = self.delete(
            (subject_pk(&record.subject), version_sk(record.version)),
            Some("deleted = :t"),
            [(":t", AttributeValue::Bool(true))],
        )?;
        let usage = self.delete(
            (id_pk(record.id), usage_sk(&record.subject, record.version)),
            None,
            [],
        )?;
        let listing = self.update(
            ("SUBJECTS".into(), record.subject.clone()),
            "ADD kept :minus",
            None,
            [(":minus", AttributeValue::N("-1".into()))],
        )?;
        self.transact("hard_delete_version", vec![version, usage, listing])
            .await
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<CompatibilityLevel>> {
        let (pk, sk) = config_key(subject);
        self.level(pk, &sk).await
    }

    async fn set_config(&self, subject: Option<&str>, level: CompatibilityLevel) -> Result<()> {
        let (pk, sk) = config_key(subject);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item([
                (PK, s(pk)),
                (SK, s(sk)),
                ("level", s(level.as_str())),
            ])))
            .send()
            .await
            .map_err(|e| sdk_error("set_config", e))?;
        Ok(())
    }

    async fn delete_config(&self, subject: &str) -> Result<Option<CompatibilityLevel>> {
        let (pk, sk) = config_key(Some(subject));
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("delete_config", e))?;
        out.attributes
            .filter(|old| !old.is_empty())
            .map(|old| level(&old))
            .transpose()
    }
}
