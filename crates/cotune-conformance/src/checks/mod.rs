//! The checks, grouped by what they exercise; each is a public function over a
//! [`Subject`](crate::Subject), re-exported at the crate root.

mod forward;
mod generation;
mod inputs;
mod state;
mod training;

pub use forward::{
    causality, determinism, logits_shape, metadata, padding_invariance, prompt_matters,
};
pub use generation::generation;
pub use inputs::bad_input;
pub use state::{checkpoint, lora_round_trip, lora_split, param_round_trip};
pub use training::{learning, mutual_learning};
