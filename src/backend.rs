//! (skeleton: backend)
