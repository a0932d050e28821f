//! NUMAPolicy: the CRD model and its validation (`spec`, `parse`), loading and reload
//! (`load`), per-workload window evaluation (`evaluate`), the handler with the design
//! supplement's resolution flow (`handler`), and the engine tying them to the actuators.
pub mod engine;
pub mod evaluate;
pub mod handler;
pub mod load;
pub mod metrics;
pub mod parse;
pub mod placement;
pub mod service;
pub mod spec;
pub mod workload;
