//! Celery protocol v2 messages for the kombu Redis transport: build, validate, decode.
//!
//! The operator is Celery beat: it `LPUSH`es task messages straight into the broker.
//! Everything here is pure; the broker module does the I/O. The wire format is pinned
//! by real captures (`operator/tests/data/celery-wire`, with the observed protocol in its
//! SPEC.md), which the tests replay.
//!
//! Typical use: derive the id with [`task_id_for_slot`], build a [`TaskMessage`],
//! [`TaskMessage::encode`] it (validates, then returns the list key and the element),
//! and push it only if its task id is not yet marked under [`slot_marks_key`].

pub(crate) mod decode;
pub(crate) mod message;
pub(crate) mod names;
mod python;
pub(crate) mod queue;
pub(crate) mod result;
pub(crate) mod revoke;
pub(crate) mod stamp;
pub(crate) mod task_id;
pub(crate) mod validate;

#[cfg(test)]
pub(crate) mod testdata;

pub use decode::{DecodeError, DecodedMessage, decode_envelope};
pub use message::{EncodeError, EncodedMessage, TaskMessage};
pub use queue::TransportOptions;
pub use stamp::Stamp;
pub use task_id::{run_counts_key, run_now_marks_key, slot_marks_key, task_id_for_slot};
pub use validate::{Field, MAX_BODY_BYTES, ValidationError, validate_message};
