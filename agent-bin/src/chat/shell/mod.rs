//! The `shell` tool: which commands may run, and running them inside the workspace.
//!
//! A policy must see what the shell will run, so the command line is parsed as `sh` parses it
//! (`parse.rs`, strict: what it cannot read is asked) and every simple command in it is judged
//! (`policy.rs`): behind wrappers and in `sh -c` strings (`wrappers.rs`), with the options that
//! make a read-only program write, delete or run known per program (`flags.rs`). Deny patterns
//! win over everything, a "yes" included; a line whose every command is allowed runs; anything
//! else asks.
//!
//! What runs is confined by an OS sandbox where the machine has bubblewrap (`sandbox.rs`: the
//! workspace writable, the rest read-only, home secrets hidden, no network by default), and
//! run in a process group that the timeout kills whole, output capped (`run.rs`).

mod flags;
mod parse;
mod policy;
mod run;
mod sandbox;
mod wrappers;

#[cfg(test)]
mod corpus;

pub use policy::{Policy, Verdict};
pub use run::run;
pub use sandbox::{Sandbox, SandboxMode, SandboxPolicy};
