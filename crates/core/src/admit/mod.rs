//! Who may send this turn: the connection's session and principal ([`session`]), and the limits that admit
//! or refuse it ([`limits`]), and the model calls made for a user off the turn, counted ([`metered`]).

pub mod limits;
pub mod metered;
pub mod session;
