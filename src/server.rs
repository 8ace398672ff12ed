//! (skeleton: server)
