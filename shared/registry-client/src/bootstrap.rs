//! Start-up of a stage: learn the envelope's registry id by registering the bundled schema.

use std::time::{Duration, Instant};

use riffle_codec::envelope::{ENVELOPE_SCHEMA, ENVELOPE_SUBJECT};
use riffle_codec::{CodecError, EnvelopeCodec};

use crate::{ClientError, RegistryClient};

/// First pause between attempts while the registry is unavailable; doubles up to a second.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

impl RegistryClient {
    /// Registers the envelope schema this binary was built with (idempotent: the registry
    /// returns the existing id) and returns a codec that writes it. Retries while the registry
    /// is unavailable, for at most `patience`, because stages and the registry start together.
    ///
    /// # Errors
    /// The registry refused the schema, or stayed unavailable for `patience`.
    pub async fn envelope_codec(&self, patience: Duration) -> Result<EnvelopeCodec, ClientError> {
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        let id = loop {
            match self.register(ENVELOPE_SUBJECT, ENVELOPE_SCHEMA).await {
                Ok(id) => break id,
                Err(e) if e.retryable() && started.elapsed() + pause < patience => {
                    tracing::info!(error = %e, "registry not ready, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        };
        EnvelopeCodec::new(id).map_err(|e: CodecError| ClientError::Decode(e.to_string()))
    }
}
