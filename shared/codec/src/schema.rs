//! Writer schemas, parsed once per registry id and kept for the life of the process.
//!
//! A registry id never changes meaning, so a parsed schema is valid forever: the cache never
//! evicts, and each entry leaks its parsed [`Schema`] on purpose so that the datum reader and the
//! name table can borrow it with a `'static` lifetime instead of being rebuilt per record.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, NamesRef, ResolvedSchema};

use crate::CodecError;
use crate::rules::Contract;
use crate::source::{Fetched, SchemaSource, SourceError};

/// One parsed writer schema with everything the hot path needs precomputed.
pub struct CompiledSchema {
    id: u32,
    schema: &'static Schema,
    names: NamesRef<'static>,
    reader: GenericDatumReader<'static>,
    fields: HashMap<String, usize>,
    // Computed once: the validator compares it with every record's subject.
    full_name: Option<String>,
    // The named records a value of which may take no bytes, computed on first use: the
    // payload walker asks for every array it reads (see `datum`).
    empty_records: std::sync::OnceLock<std::collections::HashSet<Name>>,
    // The subject's contract as registered with this schema version (ADR 0020).
    contract: Option<Contract>,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("id", &self.id)
            .field("name", &self.full_name())
            .finish()
    }
}

impl CompiledSchema {
    /// Parses `text` (Avro JSON) registered under `id`.
    ///
    /// # Errors
    /// [`CodecError::InvalidSchema`] when Avro rejects the text.
    pub fn parse(id: u32, text: &str) -> Result<Self, CodecError> {
        let invalid = |e: apache_avro::Error| CodecError::InvalidSchema {
            id,
            reason: e.to_string(),
        };
        let schema: &'static Schema =
            Box::leak(Box::new(Schema::parse_str(text).map_err(invalid)?));
        let names = ResolvedSchema::try_from(schema)
            .map_err(invalid)?
            .get_names()
            .clone();
        let reader = GenericDatumReader::builder(schema)
            .build()
            .map_err(invalid)?;
        let fields = match schema {
            Schema::Record(record) => record
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), i))
                .collect(),
            _ => HashMap::new(),
        };
        let full_name = match schema {
            Schema::Record(r) => Some(r.name.fullname(None)),
            _ => None,
        };
        Ok(CompiledSchema {
            id,
            schema,
            names,
            reader,
            fields,
            full_name,
            empty_records: std::sync::OnceLock::new(),
            contract: None,
        })
    }

    /// Parses a registered schema with the contract registered alongside it.
    ///
    /// # Errors
    /// [`CodecError::InvalidSchema`] when Avro rejects the text or the contract fields do
    /// not read as a contract (a contract on a schema that is not a named record among
    /// them): the id can never be used, as with a schema that does not parse.
    pub fn parse_registered(id: u32, fetched: &Fetched) -> Result<Self, CodecError> {
        let mut compiled = CompiledSchema::parse(id, &fetched.schema)?;
        let invalid = |reason: String| CodecError::InvalidSchema { id, reason };
        if fetched.contract.is_empty() {
            return Ok(compiled);
        }
        // Contract fields of other kinds (tags, CEL rules) may sit on any schema; a Riffle
        // contract needs a record, whose name is its subject.
        let subject = compiled.full_name.clone().unwrap_or_default();
        compiled.contract = fetched
            .contract
            .contract(&subject)
            .map_err(|e| invalid(e.to_string()))?;
        if compiled.contract.is_some() && compiled.full_name.is_none() {
            return Err(invalid(
                "a contract on a schema that is not a named record".into(),
            ));
        }
        Ok(compiled)
    }

    /// The contract registered with this schema, if any.
    pub fn contract(&self) -> Option<&Contract> {
        self.contract.as_ref()
    }

    /// Whether a value of the named record `name` may take no bytes.
    pub fn record_may_be_empty(&self, name: &Name) -> bool {
        self.empty_records
            .get_or_init(|| crate::datum::empty_record_names(self))
            .contains(name)
    }

    /// The registry id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The parsed schema.
    pub fn schema(&self) -> &'static Schema {
        self.schema
    }

    /// Named types reachable from the schema, for resolving `Schema::Ref`.
    pub fn names(&self) -> &NamesRef<'static> {
        &self.names
    }

    /// Looks up a named type referenced inside the schema.
    pub fn lookup(&self, name: &Name) -> Option<&'static Schema> {
        self.names.get(name).copied()
    }

    /// Position of a top-level record field, if the schema is a record with that field.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.get(name).copied()
    }

    /// The record's full name, when the schema is a named type.
    pub fn full_name(&self) -> Option<&str> {
        self.full_name.as_deref()
    }

    /// Decodes an Avro body straight into `T` with serde (no intermediate `Value`).
    ///
    /// # Errors
    /// [`CodecError::Malformed`] when the body does not match the schema or has trailing bytes.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, CodecError> {
        let mut cursor = body;
        let value = self
            .reader
            .read_deser::<T>(&mut cursor)
            .map_err(|e| self.malformed(e.to_string()))?;
        if !cursor.is_empty() {
            return Err(self.malformed(format!("{} trailing bytes", cursor.len())));
        }
        Ok(value)
    }

    /// Encodes `value` as an Avro body appended to `out`, serde straight to bytes.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the value does not fit the schema.
    pub fn encode<T: serde::Serialize>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        apache_avro::write_avro_datum_ref(self.schema, &self.names, value, out)
            .map(|_| ())
            .map_err(|e| CodecError::Encode {
                id: self.id,
                reason: e.to_string(),
            })
    }

    pub(crate) fn malformed(&self, reason: String) -> CodecError {
        CodecError::Malformed {
            id: self.id,
            reason,
        }
    }
}

/// Parsed schemas by id, fetched from a [`SchemaSource`] on first use.
///
/// The lock is never held across an await; handlers resolve the distinct ids of a batch first
/// and then work on the `Arc`s without touching the cache per record.
pub struct SchemaCache<S> {
    source: S,
    schemas: RwLock<HashMap<u32, Arc<CompiledSchema>>>,
    // Ids the registry said it does not know, and when: a stream of records naming a made-up
    // id would otherwise cost a registry request in every batch.
    unknown: RwLock<HashMap<u32, Instant>>,
    unknown_ttl: Duration,
}

/// How long a registry's "no such id" is believed. Short, because an id unknown now may be
/// registered next (ids are handed out in order, so only records that named an id before it
/// existed are affected, and such records are already wrong); and an unknown id's records
/// are rejected with their reason, never dropped, so they can be redriven.
pub const UNKNOWN_ID_TTL: Duration = Duration::from_secs(5);

/// Ids kept as unknown at most; past that the oldest half is forgotten (records naming
/// random ids cannot grow the process).
const UNKNOWN_IDS_KEPT: usize = 4096;

impl<S> std::fmt::Debug for SchemaCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache").finish_non_exhaustive()
    }
}

impl<S: SchemaSource> SchemaCache<S> {
    /// An empty cache in front of `source`.
    pub fn new(source: S) -> Self {
        SchemaCache {
            source,
            schemas: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
            unknown_ttl: UNKNOWN_ID_TTL,
        }
    }

    /// The same cache believing "no such id" for `ttl` instead of [`UNKNOWN_ID_TTL`].
    #[must_use]
    pub fn with_unknown_ttl(mut self, ttl: Duration) -> Self {
        self.unknown_ttl = ttl;
        self
    }

    /// The schema if it is already cached; never calls the registry.
    pub fn get_cached(&self, id: u32) -> Option<Arc<CompiledSchema>> {
        self.schemas
            .read()
            .map_or(None, |map| map.get(&id).cloned())
    }

    /// The schema for `id`, fetched and parsed once.
    ///
    /// # Errors
    /// [`CodecError::UnknownSchema`] if the registry has no such id,
    /// [`CodecError::RegistryUnavailable`] if it cannot be asked, or an invalid schema.
    pub async fn get(&self, id: u32) -> Result<Arc<CompiledSchema>, CodecError> {
        if let Some(found) = self.get_cached(id) {
            return Ok(found);
        }
        if self.known_unknown(id) {
            return Err(CodecError::UnknownSchema(id));
        }
        let fetched = self.source.fetch_schema(id).await.map_err(|e| match e {
            SourceError::NotFound(id) => {
                self.remember_unknown(id);
                CodecError::UnknownSchema(id)
            }
            SourceError::Unavailable(why) => CodecError::RegistryUnavailable(why),
        })?;
        Ok(self.keep(id, CompiledSchema::parse_registered(id, &fetched)?))
    }

    /// Whether the registry said within the cache's TTL ([`UNKNOWN_ID_TTL`]) that it does not know `id`.
    fn known_unknown(&self, id: u32) -> bool {
        self.unknown.read().is_ok_and(|map| {
            map.get(&id)
                .is_some_and(|at| at.elapsed() < self.unknown_ttl)
        })
    }

    fn remember_unknown(&self, id: u32) {
        if let Ok(mut map) = self.unknown.write() {
            if map.len() >= UNKNOWN_IDS_KEPT {
                map.retain(|_, at| at.elapsed() < self.unknown_ttl);
            }
            if map.len() >= UNKNOWN_IDS_KEPT {
                let mut ages: Vec<Instant> = map.values().copied().collect();
                let (_, median, _) = ages.select_nth_unstable(UNKNOWN_IDS_KEPT / 2);
                let median = *median;
                map.retain(|_, at| *at > median);
            }
            map.insert(id, Instant::now());
        }
    }

    /// Parses and caches `text` under `id` (used to preload known schemas).
    ///
    /// # Errors
    /// [`CodecError::InvalidSchema`].
    pub fn insert(&self, id: u32, text: &str) -> Result<Arc<CompiledSchema>, CodecError> {
        Ok(self.keep(id, CompiledSchema::parse(id, text)?))
    }

    fn keep(&self, id: u32, compiled: CompiledSchema) -> Arc<CompiledSchema> {
        let compiled = Arc::new(compiled);
        if let Ok(mut map) = self.schemas.write() {
            // Another task may have won the race; keep the first so every holder shares one.
            return map.entry(id).or_insert(compiled).clone();
        }
        compiled
    }

    /// The underlying source (for registration and diagnostics).
    pub fn source(&self) -> &S {
        &self.source
    }
}
