//! The `Store` contract: what every implementation must do, one function per property, written once and
//! run against each store (the in-memory store in this crate's tests, `DynamoStore` over moto_server in
//! the workspace tests) with [`store_contract_tests!`](crate::store_contract_tests). Each function takes a
//! fresh store; an `Err` is a store call that failed where the contract says it succeeds, a panic a
//! property that does not hold.
//!
//! TTLs: every record that exposes its `expires_at` reads back with it. Expiry itself is the table's, and no
//! property depends on it: DynamoDB deletes expired items in the background, typically within two days, and
//! until then they still show in reads (Amazon DynamoDB API Reference, `UpdateTimeToLive`; Developer Guide,
//! "Working with expired items").

use crate::cache::CounterKey;
use crate::error::StoreError;
use crate::intent::Intent;
use crate::ports::{Claim, Counter, Store, Summary, TurnStatus};

use super::fixtures::{FAR_FUTURE_S, conn, connection, message, session, turn, user};

/// The tests, one per property, for the store `$make` builds: an `async` block evaluating to `(store,
/// guard)`, the guard kept alive for the test (the server behind the store; `()` for none). Expands to
/// `#[tokio::test]` functions named after the properties, in the module where it is invoked.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            a_connection_reads_back_as_written_until_deleted,
            a_message_is_claimed_once_per_session_until_released,
            an_answered_claim_is_never_released,
            a_turn_that_did_not_settle_gives_its_claim_back,
            a_turn_stored_twice_is_stored_once_and_the_second_write_changes_nothing,
            a_turn_reads_back_with_every_field,
            recent_turns_are_the_newest_first_of_that_session_only,
            a_new_session_records_its_owner_and_the_same_owner_may_record_it_again,
            a_session_owned_by_another_user_is_refused_and_keeps_its_owner,
            a_connection_has_one_turn_slot_held_until_its_time_or_its_end,
            a_turn_slot_alone_is_not_a_connection_and_leaves_the_record_alone,
            a_counter_counts_within_its_limit_and_never_below_zero,
            a_summary_only_moves_forward,
        );
    };
    (@each $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::testkit::store_contract::$case(&store).await.unwrap();
            }
        )*
    };
}

pub async fn a_connection_reads_back_as_written_until_deleted<S: Store>(store: &S) -> Result<(), StoreError> {
    let rec =
        connection("c-1=", "s-1", "u-1").guest().connected_at(1_800_000_000_123).expires_at(1_800_010_800).build();
    assert_eq!(store.get_connection(&rec.connection_id).await?, None, "unknown connection");
    store.put_connection(&rec).await?;
    assert_eq!(store.get_connection(&rec.connection_id).await?, Some(rec.clone()), "every field, the TTL included");
    let other = connection("c-2", "s-2", "u-2").build();
    store.put_connection(&other).await?;
    assert_eq!(store.get_connection(&other.connection_id).await?, Some(other));
    store.delete_connection(&rec.connection_id).await?;
    assert_eq!(store.get_connection(&rec.connection_id).await?, None, "deleted");
    store.delete_connection(&rec.connection_id).await?;
    store.delete_connection(&conn("never-seen")).await?;
    Ok(())
}

pub async fn a_message_is_claimed_once_per_session_until_released<S: Store>(store: &S) -> Result<(), StoreError> {
    let (m, s1, s2) = (message("m-1"), session("s-1"), session("s-2"));
    assert_eq!(store.claim_message(&m, &s1, FAR_FUTURE_S).await?, Claim::Claimed);
    assert_eq!(store.claim_message(&m, &s1, FAR_FUTURE_S).await?, Claim::Duplicate, "delivered twice");
    assert_eq!(store.claim_message(&m, &s2, FAR_FUTURE_S).await?, Claim::Claimed, "ids are per session");
    store.release_claim(&m, &s1).await?;
    assert_eq!(store.claim_message(&m, &s1, FAR_FUTURE_S).await?, Claim::Claimed, "released: the client may retry");
    store.release_claim(&message("never-claimed"), &s1).await?;
    Ok(())
}

pub async fn an_answered_claim_is_never_released<S: Store>(store: &S) -> Result<(), StoreError> {
    for (id, status) in [("m-complete", TurnStatus::Complete), ("m-blocked", TurnStatus::Blocked)] {
        let t = turn("s-1", id).status(status).build();
        assert_eq!(store.claim_message(&t.message_id, &t.session_id, FAR_FUTURE_S).await?, Claim::Claimed);
        store.save_turn(&t).await?;
        store.release_claim(&t.message_id, &t.session_id).await?;
        let again = store.claim_message(&t.message_id, &t.session_id, FAR_FUTURE_S).await?;
        assert_eq!(again, Claim::Duplicate, "{status:?}: answered for good, never answered twice");
    }
    // An answer stored without a claim (the claim write failed, the turn went on) still marks it answered.
    let t = turn("s-1", "m-unclaimed").build();
    store.save_turn(&t).await?;
    assert_eq!(store.claim_message(&t.message_id, &t.session_id, FAR_FUTURE_S).await?, Claim::Duplicate);
    Ok(())
}

pub async fn a_turn_that_did_not_settle_gives_its_claim_back<S: Store>(store: &S) -> Result<(), StoreError> {
    for (id, status) in [("m-partial", TurnStatus::Partial), ("m-gone", TurnStatus::ClientGone)] {
        let t = turn("s-1", id).status(status).answer("The first part ").build();
        assert_eq!(store.claim_message(&t.message_id, &t.session_id, FAR_FUTURE_S).await?, Claim::Claimed);
        store.save_turn(&t).await?;
        let again = store.claim_message(&t.message_id, &t.session_id, FAR_FUTURE_S).await?;
        assert_eq!(again, Claim::Claimed, "{status:?}: the shopper may send the same message again");
    }
    Ok(())
}

pub async fn a_turn_stored_twice_is_stored_once_and_the_second_write_changes_nothing<S: Store>(
    store: &S,
) -> Result<(), StoreError> {
    let first = turn("s-1", "m-1").at(10).answer("first write").build();
    store.save_turn(&first).await?;
    let retried = turn("s-1", "m-1").at(10).answer("a retried write").build();
    store.save_turn(&retried).await?;
    assert_eq!(store.recent_turns(&first.session_id, 10).await?, [first], "one turn, as first stored");
    // A partial turn stored again after its message was claimed anew (by the client's retry) leaves that
    // new claim alone: the retry is still being answered.
    let partial = turn("s-1", "m-2").at(20).status(TurnStatus::Partial).build();
    store.save_turn(&partial).await?;
    assert_eq!(store.claim_message(&partial.message_id, &partial.session_id, FAR_FUTURE_S).await?, Claim::Claimed);
    store.save_turn(&partial).await?;
    let again = store.claim_message(&partial.message_id, &partial.session_id, FAR_FUTURE_S).await?;
    assert_eq!(again, Claim::Duplicate, "the retry's claim was not given back by a repeated write");
    Ok(())
}

pub async fn a_turn_reads_back_with_every_field<S: Store>(store: &S) -> Result<(), StoreError> {
    let full = turn("s-1", "m-1")
        .at(1_800_000_000_123)
        .user_text("おすすめのホラー漫画は? \"quoted\"")
        .answer("Try B0BBBBBBB2, then B0AAAAAAA1.")
        .products(&["B0BBBBBBB2", "B0AAAAAAA1"])
        .intent(Intent::Recommendation)
        .status(TurnStatus::Blocked)
        .model("jp.anthropic.claude-haiku-4-5-20251001-v1:0")
        .usage(812, 64)
        .counted(9, 14)
        .guardrail("output:topic")
        .expires_at(1_800_086_400)
        .build();
    store.save_turn(&full).await?;
    let bare = turn("s-1", "m-2").at(1_800_000_000_124).build();
    store.save_turn(&bare).await?;
    assert_eq!(store.recent_turns(&full.session_id, 10).await?, [bare, full], "products in order, the TTL kept");
    Ok(())
}

pub async fn recent_turns_are_the_newest_first_of_that_session_only<S: Store>(store: &S) -> Result<(), StoreError> {
    let s = session("s-1");
    assert!(store.recent_turns(&s, 10).await?.is_empty(), "an unknown session has no turns");
    // Stored out of order; the same millisecond twice (ordered by message id).
    for (ts, id) in [(20, "m-b"), (5, "m-a"), (1_000, "m-d"), (20, "m-c")] {
        store.save_turn(&turn("s-1", id).at(ts).build()).await?;
    }
    store.save_turn(&turn("s-2", "m-other").at(5_000).build()).await?;
    store.create_session(&s, &user("u-1"), FAR_FUTURE_S).await?;
    store.put_summary(&s, &Summary { text: "older".into(), covers_until_ms: 1, expires_at: FAR_FUTURE_S }).await?;
    let ids =
        |turns: Vec<crate::ports::TurnRecord>| turns.into_iter().map(|t| t.message_id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.recent_turns(&s, 10).await?), ["m-d", "m-c", "m-b", "m-a"]);
    assert_eq!(ids(store.recent_turns(&s, 2).await?), ["m-d", "m-c"], "the newest `limit`");
    assert!(store.recent_turns(&s, 0).await?.is_empty(), "a window of none reads none");
    Ok(())
}

pub async fn a_new_session_records_its_owner_and_the_same_owner_may_record_it_again<S: Store>(
    store: &S,
) -> Result<(), StoreError> {
    let (s, alice) = (session("s-1"), user("alice"));
    assert_eq!(store.session_owner(&s).await?, None, "unknown session");
    store.create_session(&s, &alice, FAR_FUTURE_S).await?;
    assert_eq!(store.session_owner(&s).await?, Some(alice.clone()));
    // A retried write whose first attempt landed: the same owner, so nothing to refuse.
    store.create_session(&s, &alice, FAR_FUTURE_S).await?;
    assert_eq!(store.session_owner(&s).await?, Some(alice));
    Ok(())
}

pub async fn a_session_owned_by_another_user_is_refused_and_keeps_its_owner<S: Store>(
    store: &S,
) -> Result<(), StoreError> {
    let (s, alice, bob) = (session("s-1"), user("alice"), user("bob"));
    store.create_session(&s, &alice, FAR_FUTURE_S).await?;
    let taken = store.create_session(&s, &bob, FAR_FUTURE_S).await.err();
    assert!(taken.is_some(), "bob was told he owns alice's session");
    assert!(taken.is_some_and(|e| !e.is_retryable()), "sending it again cannot help");
    assert_eq!(store.session_owner(&s).await?, Some(alice), "an existing owner is never replaced");
    Ok(())
}

pub async fn a_connection_has_one_turn_slot_held_until_its_time_or_its_end<S: Store>(
    store: &S,
) -> Result<(), StoreError> {
    let (c, m1, m2) = (conn("c-1="), message("m-1"), message("m-2"));
    store.put_connection(&connection("c-1=", "s-1", "u-1").build()).await?;
    assert!(store.begin_turn(&c, &m1, 1_000, 31_000).await?, "a free slot is taken");
    assert!(!store.begin_turn(&c, &m2, 2_000, 32_000).await?, "busy while another message holds it");
    assert!(!store.begin_turn(&c, &m1, 2_000, 32_000).await?, "busy for the same message delivered again");
    assert!(!store.begin_turn(&c, &m2, 31_000, 61_000).await?, "held up to its time");
    store.end_turn(&c, &m2).await?;
    assert!(!store.begin_turn(&c, &m2, 3_000, 33_000).await?, "only its holder frees a slot");
    store.end_turn(&c, &m1).await?;
    assert!(store.begin_turn(&c, &m2, 3_000, 33_000).await?, "freed by its holder");
    assert!(store.begin_turn(&c, &m1, 33_001, 63_001).await?, "a slot past its time is free");
    assert!(store.begin_turn(&conn("c-2"), &m2, 33_001, 63_001).await?, "one slot per connection");
    store.end_turn(&conn("never-seen"), &m1).await?;
    Ok(())
}

pub async fn a_turn_slot_alone_is_not_a_connection_and_leaves_the_record_alone<S: Store>(
    store: &S,
) -> Result<(), StoreError> {
    let (bare, m) = (conn("c-bare"), message("m-1"));
    assert!(store.begin_turn(&bare, &m, 1_000, 31_000).await?, "a connection without a record still gets a slot");
    assert_eq!(store.get_connection(&bare).await?, None, "a slot is not a connection record");
    let rec = connection("c-1", "s-1", "u-1").guest().build();
    store.put_connection(&rec).await?;
    assert!(store.begin_turn(&rec.connection_id, &m, 1_000, 31_000).await?);
    store.end_turn(&rec.connection_id, &m).await?;
    assert_eq!(store.get_connection(&rec.connection_id).await?, Some(rec), "the record survives its turns");
    Ok(())
}

pub async fn a_counter_counts_within_its_limit_and_never_below_zero<S: Store>(store: &S) -> Result<(), StoreError> {
    let rate = Counter::new(&user("u-1"), CounterKey::Rate { minute: 29_999_999 });
    let ttl = FAR_FUTURE_S;
    assert_eq!(store.counter(&rate).await?, 0, "absent reads as zero");
    assert_eq!(store.add_to_counter(&rate, 1, Some(3), ttl).await?, Some(1));
    assert_eq!(store.add_to_counter(&rate, 2, Some(3), ttl).await?, Some(3), "up to the limit");
    assert_eq!(store.add_to_counter(&rate, 1, Some(3), ttl).await?, None, "past the limit: refused");
    assert_eq!(store.counter(&rate).await?, 3, "a refusal changes nothing");
    assert_eq!(store.add_to_counter(&rate, 1, None, ttl).await?, Some(4), "no limit");
    assert_eq!(store.add_to_counter(&rate, -4, Some(3), ttl).await?, Some(0), "a decrement ignores the limit");
    assert_eq!(store.add_to_counter(&rate, -1, None, ttl).await?, None, "never below zero");
    assert_eq!(store.counter(&rate).await?, 0);
    let absent = Counter::new(&user("u-1"), CounterKey::Connections);
    assert_eq!(store.add_to_counter(&absent, -1, None, ttl).await?, None, "an absent counter is zero");
    assert_eq!(store.add_to_counter(&absent, 5, Some(4), ttl).await?, None, "a first step past the limit");
    assert_eq!(store.counter(&absent).await?, 0);
    // Per user and per name.
    let other_user = Counter::new(&user("u-2"), rate.key.clone());
    assert_eq!(store.add_to_counter(&other_user, 1, Some(1), ttl).await?, Some(1));
    let tokens = Counter::new(&user("u-1"), CounterKey::Tokens { jst_day: 20_001 });
    assert_eq!(store.add_to_counter(&tokens, 700, Some(1_000), ttl).await?, Some(700));
    assert_eq!(store.counter(&rate).await?, 0);
    Ok(())
}

pub async fn a_summary_only_moves_forward<S: Store>(store: &S) -> Result<(), StoreError> {
    let s = session("s-1");
    let summary = |text: &str, until| Summary { text: text.into(), covers_until_ms: until, expires_at: FAR_FUTURE_S };
    assert_eq!(store.get_summary(&s).await?, None);
    store.put_summary(&s, &summary("up to 20", 20)).await?;
    assert_eq!(store.get_summary(&s).await?, Some(summary("up to 20", 20)), "with its TTL");
    store.put_summary(&s, &summary("a slower, older summarization", 10)).await?;
    store.put_summary(&s, &summary("the same turns again", 20)).await?;
    assert_eq!(store.get_summary(&s).await?, Some(summary("up to 20", 20)), "never moved back");
    store.put_summary(&s, &summary("up to 30", 30)).await?;
    assert_eq!(store.get_summary(&s).await?.map(|x| x.text), Some("up to 30".to_owned()));
    assert_eq!(store.get_summary(&session("s-2")).await?, None, "per session");
    Ok(())
}
