//! Fuzzing Bedside's hostile-input surfaces: the client-frame decoder and the two token
//! verifiers. The oracles live here, not in the targets, so the workspace's regression
//! tests can replay the committed corpora through exactly the same checks
//! (docs/fuzzing.md).

pub mod corpus;
pub mod frames;
pub mod tokens;
