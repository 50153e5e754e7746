//! The event source mapping's settings: `riffle_aws::esm`, their one definition (the
//! templates' reader writes them, this runtime reads them).

pub use riffle_aws::esm::*;

impl From<EsmError> for crate::RuntimeError {
    fn from(e: EsmError) -> Self {
        crate::RuntimeError::Config(e.0)
    }
}
