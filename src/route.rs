//! (skeleton: route)
