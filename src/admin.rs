//! (skeleton: admin)
