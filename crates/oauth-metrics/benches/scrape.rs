//! Placeholder until the scrape benchmark lands (keeps the workspace manifest loadable).
fn main() {}
