//! (skeleton: metrics)
