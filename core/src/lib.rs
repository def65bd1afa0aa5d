//! The heart of Substratus: pure planners that turn a spec and the observed children into
//! the desired children and status, the reconcilers that apply them, and the `Cloud` trait
//! that every provider implements. Nothing in here knows which cloud it runs on.
