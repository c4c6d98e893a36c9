//! PLACEHOLDER: the decode throughput bench is written with the decoder.
fn main() {}
