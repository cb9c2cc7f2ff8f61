//! Who may send this turn: the connection's session and principal ([`session`]), and the limits that admit
//! or refuse it ([`limits`]).

pub mod limits;
pub mod session;
