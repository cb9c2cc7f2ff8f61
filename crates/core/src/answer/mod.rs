//! Where the answer comes from and how it reaches the shopper: the route and the model stream opened with
//! failover and hedging ([`routes`], [`hedge`]), a pre-generated answer or the model ([`serve`]), and the
//! relay of deltas into sequenced WebSocket frames ([`relay`]); which page-context products its cards may
//! show ([`cards`]).

pub mod cards;
pub mod hedge;
pub mod relay;
pub mod routes;
pub mod serve;
