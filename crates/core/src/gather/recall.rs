//! What a follow-up resolves against ("the first one", "最後の", a title of the last list), known before
//! the session's memory is read.
//!
//! A follow-up's lookups (its product's details, reviews and passages) depend on the product it points at,
//! which memory says; reading memory first makes the slowest leg memory + retrieval. But the turn that
//! stored the list knew everything resolution needs, so it writes it with the session's memory epoch
//! marker ([`crate::ahead::speculate::mark_stored`]): the next turn reads the marker at send (one cache
//! read, with the typing-time speculation's entry), resolves at once, and starts every leg together. The
//! marker is new for every stored turn, so a recall read with it describes the memory the marker stands
//! for; still, the turn checks the recall against the memory when that arrives and looks up again when
//! they differ (a turn stored by an instance that wrote no recall, a concurrent turn of the session): the
//! recall saves time, it never decides.

use serde::{Deserialize, Serialize};

use crate::intent::{Listed, listed_from_answer};
use crate::ports::TurnRecord;
use crate::pregen::Before;

/// What the follow-up of a session's last turn resolves against: the list it may point into, with the
/// titles the answer gave its products, and what the shopper asked just before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recall {
    /// The products of the last listing answer (the newest turn with several, else with one), in order.
    pub listed: Vec<Listed>,
    pub asked: Asked,
}

/// What the shopper asked in the newest stored turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Asked {
    /// No turn yet.
    #[default]
    Nothing,
    /// Its answer listed several products.
    List,
    /// A follow-up (its text).
    FollowUp(String),
}

impl Recall {
    /// The recall of a session whose turns, newest first, are `turns`.
    pub fn of<'a>(turns: impl IntoIterator<Item = &'a TurnRecord> + Clone) -> Self {
        let several = turns.clone().into_iter().find(|t| t.products.len() > 1);
        let list_turn = several.or_else(|| turns.clone().into_iter().find(|t| !t.products.is_empty()));
        let listed = list_turn.map(|t| listed_from_answer(&t.assistant_text, &t.products)).unwrap_or_default();
        let asked = match turns.into_iter().next() {
            None => Asked::Nothing,
            Some(t) if t.products.len() > 1 => Asked::List,
            Some(t) => Asked::FollowUp(t.user_text.clone()),
        };
        Self { listed, asked }
    }

    /// What was asked before, as the generic-vs-specific reading takes it.
    pub fn before(&self) -> Before<'_> {
        match &self.asked {
            Asked::Nothing => Before::Unknown,
            Asked::List => Before::List,
            Asked::FollowUp(text) => Before::FollowUp(text, &self.listed),
        }
    }
}

/// The session's memory epoch as the cache keeps it: the marker (new for every stored turn or summary)
/// and the recall of the memory it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochValue {
    pub marker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<Recall>,
}

impl EpochValue {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.marker.clone())
    }

    /// A cached value: this JSON, or a bare marker (written before recalls were; it has none).
    pub fn decode(text: &str) -> Self {
        match serde_json::from_str::<Self>(text) {
            Ok(v) => v,
            Err(_) => Self { marker: text.to_owned(), recall: None },
        }
    }
}
