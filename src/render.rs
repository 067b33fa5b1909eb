//! Outputs for people: the RTT matrix as a terminal table (more formats follow).
//!
//! Reads runs; never probes.

pub mod diff;
pub mod heatmap;
pub mod scale;
pub mod table;
