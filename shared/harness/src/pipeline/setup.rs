//! Getting a fresh local pipeline ready: the project's schemas registered and the
//! enricher's reference data seeded.

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_loadtest::SchemaIds;
use riffle_registry_client::RegistryClient;
use std::collections::HashMap;

use super::*;

impl Pipeline {
    /// The registry client (the registry runs once [`Pipeline::start`] returned).
    ///
    /// # Errors
    /// Before the registry is up.
    pub fn registry(&self) -> Result<&RegistryClient, PipelineError> {
        self.registry
            .as_ref()
            .ok_or_else(|| PipelineError::Process {
                service: REGISTRY.into(),
                reason: "not started".into(),
            })
    }

    pub(super) async fn register_schemas(&self) -> Result<SchemaIds, PipelineError> {
        let registry = self.registry()?;
        let envelope = registry
            .register(
                riffle_codec::envelope::ENVELOPE_SUBJECT,
                riffle_codec::envelope::ENVELOPE_SCHEMA,
            )
            .await?;
        // The contract files are what is registered (ADR 0020): read here, not compiled in.
        let mut ids = HashMap::new();
        for (file, text) in read_contract_files(&self.options.schemas_dir.join("rules"))? {
            let contract = riffle_codec::registered::DataContract::from_file(&file, &text)
                .map_err(|e| PipelineError::Aws(e.to_string()))?;
            let path = self.options.schemas_dir.join(&contract.schema_file);
            let schema = std::fs::read_to_string(&path).map_err(|e| PipelineError::Process {
                service: REGISTRY.into(),
                reason: format!("reading {}: {e}", path.display()),
            })?;
            ids.insert(
                contract.subject.clone(),
                registry
                    .register_with(&contract.subject, &schema, &contract.fields)
                    .await?,
            );
        }
        let id = |subject: &str| {
            ids.get(subject)
                .copied()
                .ok_or_else(|| PipelineError::Process {
                    service: REGISTRY.into(),
                    reason: format!("no contract in schemas/rules for {subject}"),
                })
        };
        Ok(SchemaIds {
            envelope,
            order: id("com.riffle.shop.OrderPlaced")?,
            page_view: id("com.riffle.web.PageView")?,
            sensor: id("com.riffle.iot.SensorReading")?,
        })
    }

    pub(super) async fn seed_reference(&self) -> Result<(), PipelineError> {
        let table = self
            .deployment
            .table_name("ReferenceTable")
            .ok_or_else(|| PipelineError::Aws("no ReferenceTable in the templates".into()))?
            .to_string();
        let client = riffle_aws::dynamodb_client(&self.sdk);
        let items = riffle_loadtest::reference_items();
        let requests = items
            .iter()
            .map(|item| {
                let mut attrs: HashMap<String, AttributeValue> = item
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
                    .collect();
                attrs.insert("pk".into(), AttributeValue::S(item.pk.clone()));
                riffle_aws::dynamo_batch::put(attrs)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(aws("reference item"))?;
        riffle_aws::dynamo_batch::batch_write(&client, &table, requests)
            .await
            .map_err(aws("seeding reference data"))?;
        Ok(())
    }
}

/// Every `*.json` in `dir`, as (file name, text), in name order.
fn read_contract_files(dir: &std::path::Path) -> Result<Vec<(String, String)>, PipelineError> {
    let unreadable = |e: std::io::Error| PipelineError::Process {
        service: REGISTRY.into(),
        reason: format!("reading {}: {e}", dir.display()),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).map_err(unreadable)?;
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}
