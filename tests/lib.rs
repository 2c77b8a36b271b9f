//! End-to-end tests across civkit crates, against clients we did not write.
//! The tests live in `tests/`; this library is empty.
