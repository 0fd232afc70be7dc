//! Runs the shared conformance suite against the heap backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_heap::HeapBackendFactory;

flowstate_conformance::conformance_suite!(HeapBackendFactory);
