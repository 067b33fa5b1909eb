//! latmap's integration tests: one binary, real sockets on loopback, the built CLI.

mod analysis;
mod cli;
mod harness;
mod lab;
mod probes;
