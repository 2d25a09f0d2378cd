//! Integration tests of annals-core: the conformance suite on the memory store, typed
//! read errors, tamper detection and the repository.

mod conformance;
mod reads;
mod repository;
