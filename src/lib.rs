//! latmap maps network latency and loss between the regions of a fleet.
//!
//! ```text
//! regions.toml ──▶ Config ──▶ Prober (one per region) ──▶ RegionReport ──┐
//!                                                                        ├──▶ Run (run.json)
//!                        Prober (another region) ──▶ RegionReport ──────┘
//! ```
//!
//! Modules are declared in data-flow order; each imports only the ones above it.

pub mod artifact;
pub mod cli;
pub mod config;
pub mod diff;
pub mod lab;
pub mod probe;
pub mod reflector;
pub mod render;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sockopt;
pub mod stats;
pub mod sweep;
