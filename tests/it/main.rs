//! The integration tests: one test binary, one module per area (run one
//! area with `cargo test --test it <module>::`). `common` holds the helpers
//! they share, `receiver` the test register the delivery tests send to.

#[macro_use]
mod common;
mod receiver;

mod audit;
mod cli_decode;
mod crash;
mod daemon;
mod decode_equivalence;
mod decode_external;
mod decode_fixtures;
mod decode_hostile;
mod delivery;
mod demo_policy;
mod feed_format;
mod first_feed;
mod fuzz_regressions;
mod generated_feed;
mod golden_batches;
mod hetu_props;
mod identity;
mod key_rotation;
mod monitoring;
mod operator;
mod outage;
mod ownership;
mod policy_feed;
mod privacy;
mod properties;
mod replicas;
mod secrets;
mod sql_source;
mod statistics;
mod store_seen;
mod synth;
mod validate;
mod values_feed;
