//! Integration tests: the real server over loopback, a downstream that records what it received.

mod common;

mod binary;
mod config_files;
mod dedup;
mod forwarding;
mod lifecycle;
mod limits;
mod schemes;
