//! NUMAPolicy: the CRD model and its validation (`spec`, `parse`), loading and reload
//! (`load`), per-workload window evaluation (`evaluate`), the handler with the design
//! supplement's resolution flow (`handler`), and the engine tying them to the actuators.
pub mod parse;
pub mod spec;
pub mod placement;
pub mod workload;
pub mod evaluate;
pub mod handler;
pub mod engine;
pub mod metrics;
pub mod load;
pub mod service;
