//! cotune-conformance
