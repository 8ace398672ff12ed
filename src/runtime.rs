//! (skeleton: runtime)
