//! (skeleton: protocol)
