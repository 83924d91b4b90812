//! Placeholder; the benchmarks land with the cache.
fn main() {}
