//! What a message makes the turn look up: the products it is about, the lookups its intent needs (the
//! design's resolution table), and which of them a typing-time speculation already answered.

use super::{Assembled, Reusable};
use crate::cache::Lookup;
use crate::ids::{Asin, UserId};
use crate::intent::{Entities, Intent};
use crate::pregen::Ask;
use crate::protocol::{Leg, PageContext};

/// The products a turn is about: explicit ASINs, the resolved ordinal, then the page's current product,
/// then browsing history; at most `max`.
pub fn focus_products(entities: &Entities, page: &PageContext, max: usize) -> Vec<Asin> {
    let mut out: Vec<Asin> = Vec::new();
    let mut push = |a: &Asin| {
        if out.len() < max && !out.contains(a) {
            out.push(a.clone());
        }
    };
    entities.asins.iter().for_each(&mut push);
    if let Some(p) = &entities.resolved {
        push(p);
    }
    page.current_asin.iter().chain(&page.browsing_history).for_each(push);
    out
}

/// What the services should be asked for this intent (the design's resolution table).
pub fn lookups(intent: Intent, products: &[Asin], user: &UserId) -> Vec<Lookup> {
    let mut out = Vec::new();
    match intent {
        Intent::ProductQuestion | Intent::ReturnRequest => {
            for a in products {
                out.push(Lookup::Product(a.clone()));
                if intent == Intent::ProductQuestion {
                    out.push(Lookup::Review(a.clone()));
                }
            }
        }
        Intent::Recommendation | Intent::ProductDiscovery => {
            if let Some(a) = products.first() {
                out.push(Lookup::Reco { user: user.clone(), asin: a.clone() });
            }
            if intent == Intent::ProductDiscovery {
                out.push(Lookup::Promo);
            }
        }
        Intent::Promotion => out.push(Lookup::Promo),
        Intent::CheckoutHelp => out.extend(products.iter().take(1).map(|a| Lookup::Product(a.clone()))),
        Intent::OrderTracking | Intent::Faq | Intent::General => {}
    }
    out
}

/// What a message points at, and what that makes the turn look up.
#[derive(Debug)]
pub(super) struct Resolution {
    pub(super) entities: Entities,
    /// The intent, once the message is known to point at a listed product.
    pub(super) intent: Intent,
    pub(super) wanted: Vec<Lookup>,
    /// The pre-generated answer's key, read with the lookups.
    pub(super) entry: Option<String>,
    pub(super) ask: Ask,
}

impl Resolution {
    /// Records the ask in `asm` and takes what `prior` holds for the same resolved product; returns the
    /// lookups still to do.
    pub(super) fn served(&self, prior: Option<&Reusable>, asm: &mut Assembled) -> Vec<Lookup> {
        asm.ask = Some(self.ask.clone());
        // A speculation's values stand only for the product its own ordinal resolved to.
        let prior = prior.filter(|p| p.resolved == self.entities.resolved);
        let served = prior.map(|p| p.values.as_slice()).unwrap_or_default();
        let absent = prior.map(|p| p.absent.as_slice()).unwrap_or_default();
        take_served(self.wanted.clone(), served, absent, asm)
    }
}

/// Takes the lookups `served` (a speculation's `(key, value)` pairs) has values for into `out`; returns
/// the rest, still to be looked up.
fn take_served(
    wanted: Vec<Lookup>,
    served: &[(String, String)],
    absent: &[String],
    out: &mut Assembled,
) -> Vec<Lookup> {
    if served.is_empty() && absent.is_empty() {
        return wanted;
    }
    let (mut rest, mut rag, mut services) = (Vec::new(), false, false);
    for l in wanted {
        let key = l.key();
        let value = served.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        if value.is_none() && !absent.contains(&key) {
            rest.push(l);
            continue;
        }
        match l {
            Lookup::Rag { .. } => rag = true,
            _ => services = true,
        }
        match value {
            Some(v) => {
                out.passages.extend(l.passages(v));
                out.values.push((l, v.clone()));
            }
            // Asked at typing time, and there is no such thing: asking again would say the same.
            None => out.absent.push(l),
        }
    }
    // A follow-up's passages (a `Rag` lookup) are its retrieval leg.
    let legs = [(Leg::Retrieval, rag), (Leg::Services, services)];
    out.speculated.extend(legs.into_iter().filter(|(_, on)| *on).map(|(leg, _)| leg));
    rest
}
