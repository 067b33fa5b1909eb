//! latmap maps network latency and loss between the regions of a fleet.
//!
//! ```text
//! regions.toml ──▶ Config ──▶ Prober (one per region) ──▶ RegionReport ──┐
//!                                                                        ├──▶ Run (run.json)
//!                        Prober (another region) ──▶ RegionReport ──────┘
//! ```
//!
//! Modules are declared in data-flow order; each imports only the ones above it.

pub mod config;
