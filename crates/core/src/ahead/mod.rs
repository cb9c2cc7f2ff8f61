//! Work done ahead of the shopper: typing-time speculation of the next message's context ([`speculate`]) and
//! of its answer ([`typed`]),
//! and after an answer, speculative prefetch and pre-generation of the likely follow-up ([`prefetch`]).

pub mod prefetch;
pub mod speculate;
pub mod typed;
