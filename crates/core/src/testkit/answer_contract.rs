//! The `AnswerBuffer` contract, one function per property, run against the in-memory buffer (this crate's
//! tests) and the Redis one over a real `redis-server`, single node and cluster (the workspace tests), with
//! [`answer_contract_tests!`](crate::answer_contract_tests). Each function takes a fresh buffer (a fresh
//! session is drawn per property, so one server can serve them all).

use std::time::Duration;

use crate::ids::SessionId;
use crate::ports::ModelEvent;
use crate::ports::answers::{AnswerBuffer, Buffered, Claimed, GenerationHead};
use crate::ports::sources::SourceError;

/// The tests, one per property, for the buffer `$make` builds: an `async` block evaluating to `(buffer,
/// guard)`, the guard kept alive for the test.
#[macro_export]
macro_rules! answer_contract_tests {
    ($make:expr) => {
        $crate::answer_contract_tests!(@each $make;
            a_newer_generation_cancels_the_pending_one_and_its_writer_is_told_to_stop,
            one_claimant_gets_a_matching_generation_and_it_goes_on_until_it_ends,
            a_claim_with_another_basis_cancels_the_generation,
            a_reader_gets_what_is_buffered_at_once_then_waits_for_the_rest,
        );
    };
    (@each $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (buffer, _guard) = $make.await;
                $crate::testkit::answer_contract::$case(&buffer).await.unwrap();
            }
        )*
    };
}

const TTL: Duration = Duration::from_secs(30);

fn head(id: &str, basis: &str) -> GenerationHead {
    GenerationHead {
        id: format!("{id}-{}", fastrand::u32(..)),
        basis: basis.into(),
        model: "m".into(),
        started_at_ms: 1,
    }
}

fn text(t: &str) -> Buffered {
    Buffered::Model { at_ms: 5, event: ModelEvent::Text(t.into()) }
}

pub async fn a_newer_generation_cancels_the_pending_one_and_its_writer_is_told_to_stop<B: AnswerBuffer>(
    b: &B,
) -> Result<(), SourceError> {
    let s = SessionId::random();
    let (g1, g2) = (head("g1", "a"), head("g2", "b"));
    assert_eq!(b.begin(&s, &g1, TTL).await?, None);
    assert!(b.append(&s, &g1.id, &[text("Hel")]).await?);
    assert_eq!(b.begin(&s, &g2, TTL).await?, Some(g1.clone()), "the pending one comes back, for its waste");
    assert!(!b.append(&s, &g1.id, &[text("lo")]).await?, "the old writer stops");
    assert!(b.append(&s, &g2.id, &[text("Hi")]).await?);
    assert_eq!(b.read(&s, &g1.id, 0, Duration::ZERO).await.unwrap_or_default(), vec![text("Hel")]);
    Ok(())
}

pub async fn one_claimant_gets_a_matching_generation_and_it_goes_on_until_it_ends<B: AnswerBuffer>(
    b: &B,
) -> Result<(), SourceError> {
    let s = SessionId::random();
    let g = head("g", "what is spiral about");
    b.begin(&s, &g, TTL).await?;
    let (first, second) = tokio::join!(b.claim(&s, &g.basis), b.claim(&s, &g.basis));
    let claims = [first?, second?];
    assert_eq!(claims.iter().filter(|c| **c == Claimed::Mine(g.clone())).count(), 1, "{claims:?}");
    assert!(claims.contains(&Claimed::Nothing));
    assert!(b.append(&s, &g.id, &[text("x"), Buffered::End]).await?, "a claimed generation goes on");
    assert_eq!(b.begin(&s, &head("g3", "c"), TTL).await?, None, "a claimed one is not waste when replaced");
    Ok(())
}

pub async fn a_claim_with_another_basis_cancels_the_generation<B: AnswerBuffer>(b: &B) -> Result<(), SourceError> {
    let s = SessionId::random();
    let g = head("g", "a");
    b.begin(&s, &g, TTL).await?;
    assert_eq!(b.claim(&s, "b").await?, Claimed::Mismatch(g.clone()));
    assert!(!b.append(&s, &g.id, &[text("x")]).await?, "cancelled: its writer stops");
    assert_eq!(b.claim(&s, "a").await?, Claimed::Nothing, "nor may the right basis claim it any more");
    assert_eq!(b.claim(&SessionId::random(), "a").await?, Claimed::Nothing, "another session has nothing");
    Ok(())
}

pub async fn a_reader_gets_what_is_buffered_at_once_then_waits_for_the_rest<B: AnswerBuffer>(
    b: &B,
) -> Result<(), SourceError> {
    let s = SessionId::random();
    let g = head("g", "a");
    b.begin(&s, &g, TTL).await?;
    b.append(&s, &g.id, &[text("a"), text("b")]).await?;
    assert_eq!(b.read(&s, &g.id, 0, Duration::from_secs(1)).await?, vec![text("a"), text("b")]);
    assert_eq!(b.read(&s, &g.id, 1, Duration::from_secs(1)).await?, vec![text("b")]);
    let later = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        b.append(&s, &g.id, &[Buffered::End]).await
    };
    let (rest, appended) = tokio::join!(b.read(&s, &g.id, 2, Duration::from_secs(2)), later);
    assert!(appended?);
    assert_eq!(rest?, vec![Buffered::End], "woken by the append");
    let started = tokio::time::Instant::now();
    assert!(b.read(&s, &g.id, 3, Duration::from_millis(100)).await?.is_empty(), "nothing more");
    assert!(started.elapsed() >= Duration::from_millis(90), "it waited for the block");
    Ok(())
}
