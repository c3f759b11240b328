//! The subcommands that are not the gateway itself: tools for load tests, demos and the benchmark. They
//! use only the library's public interface.

mod client;
pub mod echo;
pub mod hotpath;
pub mod loadgen;
pub mod signature;
