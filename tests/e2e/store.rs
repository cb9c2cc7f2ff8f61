//! The `Store` contract (`mangaassist_core::testkit::store_contract`) on `DynamoStore` over moto_server: the
//! same properties the in-memory store passes in its own tests. Plus what only a table has: every item a
//! store call writes carries the TTL attribute.

use std::collections::HashSet;

use mangaassist_core::ports::Store;
use mangaassist_core::testkit::store_contract;

use crate::helpers::{dynamo, moto};

mod contract {
    use crate::helpers::{dynamo, moto};

    mangaassist_core::store_contract_tests!(async {
        let moto = moto().await;
        (dynamo(&moto).await, moto)
    });
}

#[tokio::test]
async fn every_item_the_store_writes_carries_the_ttl_attribute() {
    let moto = moto().await;
    let store = dynamo(&moto).await;
    store_contract::a_connection_reads_back_as_written_until_deleted(&store).await.unwrap();
    store_contract::a_message_is_claimed_once_per_session_until_released(&store).await.unwrap();
    // Before any other turn of session s-1: it counts them.
    store_contract::recent_turns_are_the_newest_first_of_that_session_only(&store).await.unwrap();
    store_contract::an_answered_claim_is_never_released(&store).await.unwrap();
    store_contract::a_turn_slot_alone_is_not_a_connection_and_leaves_the_record_alone(&store).await.unwrap();
    store_contract::a_counter_counts_within_its_limit_and_never_below_zero(&store).await.unwrap();
    let items = store.client().scan().table_name(table(&store).await).send().await.unwrap().items.unwrap_or_default();
    let kinds: HashSet<String> = items
        .iter()
        .map(|i| {
            i["pk"].as_s().unwrap().split('#').next().unwrap().to_owned()
                + "/"
                + i["sk"].as_s().unwrap().split('#').next().unwrap()
        })
        .collect();
    for kind in
        ["CONN/META", "MSG/CLAIM", "SESSION/OWNER", "SESSION/TURN", "SESSION/SUMMARY", "LIMIT/RATE", "LIMIT/TOKENS"]
    {
        assert!(kinds.contains(kind), "{kind} was written: {kinds:?}");
    }
    for item in &items {
        let ttl = item.get("expires_at").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<u64>().ok());
        assert!(ttl.is_some_and(|t| t > 0), "an item without a TTL would stay forever: {item:?}");
    }
    // The store is still usable after the scan (and the suite's writes are what it reads).
    assert!(!store.recent_turns(&mangaassist_core::testkit::session("s-1"), 1).await.unwrap().is_empty());
}

/// The table behind `store` (each `dynamo()` makes a fresh one).
async fn table(store: &mangaassist_adapters::dynamo::DynamoStore) -> String {
    let tables = store.client().list_tables().send().await.unwrap();
    tables.table_names().first().cloned().unwrap()
}
