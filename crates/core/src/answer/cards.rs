//! Which page-context products an answer may show as cards. The page context is the client's word: an
//! ASIN in it is well-formed (the page schema checks that) but may name nothing the store sells. It may
//! become a card only when something on our side knows it: the turn's own context (a product-service value
//! or a retrieved passage naming it), or, for the page ASINs the answer names that nothing else vouched
//! for, a product lookup (the cache, then the product service) made after the stream, off the first
//! token's path. An ASIN nobody knows is dropped: counted with the answer's other unknown products
//! (`metrics.unknown_asins`) and logged.

use std::time::Duration;

use crate::cache::Lookup;
use crate::deadline::within;
use crate::error::chain;
use crate::gather::Gathered;
use crate::ids::Asin;
use crate::ports::sources::ContextSources;
use crate::protocol::PageContext;
use crate::safety::KnownProducts;

/// The page-context ASINs that exist, of those `answer` names: the ones the gathered context holds, and
/// the ones a product lookup found (side by side, each bounded by `deadline`; a lookup that fails or times
/// out vouches for nothing).
pub async fn vouched_page_asins<X: ContextSources>(
    sources: &X,
    page: &PageContext,
    gathered: &Gathered,
    answer: &str,
    deadline: Duration,
) -> Vec<Asin> {
    let named = Asin::all_in(answer);
    let mut held = KnownProducts::default();
    for p in &gathered.context.passages {
        held.add_all_in(&p.content);
    }
    for (_, value) in &gathered.context.values {
        held.add_all_in(value);
    }
    let mut out = Vec::new();
    let mut ask = Vec::new();
    for a in page.asins() {
        if out.contains(a) || ask.contains(a) || !named.contains(a) {
            continue;
        }
        if held.contains(a) { out.push(a.clone()) } else { ask.push(a.clone()) }
    }
    if ask.is_empty() {
        return out;
    }
    let found = futures_util::future::join_all(ask.iter().map(|a| exists(sources, a, deadline))).await;
    for (a, found) in ask.into_iter().zip(found) {
        if found {
            out.push(a);
        } else {
            tracing::warn!(asin = %a, "a page-context product the catalog does not know; no card");
        }
    }
    out
}

/// Whether the cache or the product service knows `asin`.
async fn exists<X: ContextSources>(sources: &X, asin: &Asin, deadline: Duration) -> bool {
    let lookup = Lookup::Product(asin.clone());
    let key = lookup.key();
    let keys = [key];
    match within("page product (cache)", deadline, sources.cache_get(&keys)).await {
        Ok(Ok(hits)) if hits.first().is_some_and(Option::is_some) => return true,
        _ => {}
    }
    match within("page product", deadline, sources.fetch(&lookup)).await {
        Ok(Ok(found)) => found.is_some(),
        Ok(Err(e)) => {
            tracing::warn!(asin = %asin, error = %chain(&e), "could not look up a page-context product");
            false
        }
        Err(e) => {
            tracing::warn!(asin = %asin, error = %e, "could not look up a page-context product");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ScriptedSources;

    #[tokio::test]
    async fn a_page_asin_becomes_a_card_only_when_the_catalog_knows_it() {
        let sources = ScriptedSources::new().missing("product:B0FAKE0003").cached("product:B0CACHED01", "{}");
        let page = serde_json::json!({
            "current_asin": "B0FAKE0003",
            "browsing_history": ["B0REAL0001", "B0NOTNAMED", "B0CACHED01", "B0HELD0001"],
        });
        let serde_json::Value::Object(page) = page else { unreachable!() };
        let page = PageContext::parse(page).unwrap();
        let answer = "B0FAKE0003, B0REAL0001, B0CACHED01 and B0HELD0001 are all great.";
        let mut gathered = Gathered::default();
        gathered.context.values.push((Lookup::Promo, "sale on B0HELD0001".to_owned()));
        let vouched = vouched_page_asins(&sources, &page, &gathered, answer, Duration::from_millis(100)).await;
        let names: Vec<&str> = vouched.iter().map(Asin::as_str).collect();
        assert_eq!(names, ["B0HELD0001", "B0REAL0001", "B0CACHED01"], "the fake one and the unnamed one are not");
        // Only what the answer names and nothing else vouched for is looked up at the service.
        let mut asked = sources.calls();
        asked.sort();
        assert_eq!(asked, ["product:B0FAKE0003", "product:B0REAL0001"]);
    }
}
