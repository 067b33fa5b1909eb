//! latmap's integration tests: one binary, real sockets on loopback, the built CLI.

mod analysis;
mod attacks;
mod cli;
mod diff;
mod harness;
mod heatmap;
mod history;
mod lab;
mod layering;
mod load;
mod netlab;
mod netns;
mod ping;
mod probes;
mod remote;
mod schedule;
mod service;
mod settings;
mod stamp;
