//! The reconciler over a fake control plane and store, on a fixed clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::error::StoreError;
use crate::testkit::TestClock;

// 2026-11-28 in JST, as Unix ms.
const JST_0859: u64 = 1_795_823_940_000;
const JST_0900: u64 = 1_795_824_000_000;
const JST_2259: u64 = 1_795_874_340_000;
const JST_2300: u64 = 1_795_874_400_000;
const MINUTE: u64 = 60_000;

#[derive(Default)]
struct Fake {
    pts: Vec<ProvisionedThroughput>,
    tokens: HashMap<String, String>,
    creations: u32,
    deletions: u32,
    fail_next: bool,
    /// The `commitmentExpirationTime` the control plane reports for a commitment purchase.
    term_ends_ms: Option<u64>,
    /// What `provisioned_offer` answers (`None`: the trait's default, `Unknown`); `offer_fails`: an error.
    offer: Option<Offer>,
    offer_fails: bool,
    offers_asked: u32,
}

#[derive(Default)]
struct FakeControl(Mutex<Fake>);

impl FakeControl {
    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.0.lock().unwrap())
    }

    fn set_all(&self, status: ThroughputStatus) {
        self.with(|f| f.pts.iter_mut().for_each(|p| p.status = status));
    }
}

impl ThroughputControl for FakeControl {
    async fn find_by_name(&self, name: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
        // List summaries carry no failure message.
        Ok(self
            .with(|f| f.pts.iter().find(|p| p.name == name).cloned())
            .map(|p| ProvisionedThroughput { failure_message: None, ..p }))
    }

    async fn get(&self, id: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
        Ok(self.with(|f| f.pts.iter().find(|p| p.arn == id || p.name == id).cloned()))
    }

    async fn create(&self, spec: &ThroughputSpec, token: &str) -> Result<String, ControlError> {
        self.with(|f| {
            if let Some(arn) = f.tokens.get(token) {
                return Ok(arn.clone());
            }
            if f.pts.iter().any(|p| p.name == spec.name) {
                return Err(ControlError::Rejected("name in use".into(), "name in use".into()));
            }
            f.creations += 1;
            let arn = format!("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt{}", f.creations);
            let failed = std::mem::take(&mut f.fail_next);
            f.pts.push(ProvisionedThroughput {
                arn: arn.clone(),
                name: spec.name.clone(),
                status: if failed { ThroughputStatus::Failed } else { ThroughputStatus::Creating },
                model_units: spec.model_units,
                failure_message: failed.then(|| "insufficient capacity".to_owned()),
                commitment: spec.commitment,
                commitment_ends_ms: spec.commitment.and(f.term_ends_ms),
            });
            f.tokens.insert(token.to_owned(), arn.clone());
            Ok(arn)
        })
    }

    async fn delete(&self, id: &str) -> Result<(), ControlError> {
        self.with(|f| {
            let before = f.pts.len();
            f.pts.retain(|p| p.arn != id && p.name != id);
            if f.pts.len() < before {
                f.deletions += 1;
            }
        });
        Ok(())
    }

    async fn provisioned_offer(&self, _model_id: &str) -> Result<Offer, ControlError> {
        self.with(|f| {
            f.offers_asked += 1;
            if f.offer_fails {
                return Err(ControlError::Unavailable("503".into()));
            }
            Ok(f.offer.clone().unwrap_or(Offer::Unknown))
        })
    }
}

#[derive(Default)]
struct FakeStore {
    state: Mutex<Option<ThroughputState>>,
    /// Conflicts to report: each one also bumps the stored version, as a competing writer would.
    conflicts: AtomicU32,
    saves: AtomicU32,
}

impl ThroughputStateStore for FakeStore {
    async fn load(&self) -> Result<Option<ThroughputState>, StoreError> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn save(&self, state: &ThroughputState, expected: u64) -> Result<SaveOutcome, StoreError> {
        let mut stored = self.state.lock().unwrap();
        if self.conflicts.load(Ordering::SeqCst) > 0 {
            self.conflicts.fetch_sub(1, Ordering::SeqCst);
            let mut other = stored.clone().unwrap_or_default();
            other.version += 1;
            *stored = Some(other);
            return Ok(SaveOutcome::Conflict);
        }
        if stored.as_ref().map_or(0, |s| s.version) != expected {
            return Ok(SaveOutcome::Conflict);
        }
        self.saves.fetch_add(1, Ordering::SeqCst);
        *stored = Some(state.clone());
        Ok(SaveOutcome::Saved)
    }
}

type Rec = Reconciler<FakeControl, FakeStore, TestClock>;

fn reconciler(now: u64) -> Rec {
    let spec = ThroughputSpec {
        name: "mangaassist-peak".into(),
        model_id: "anthropic.claude-haiku-4-5-20251001-v1:0:200k".into(),
        model_units: 1,
        commitment: None,
    };
    Reconciler::new(FakeControl::default(), FakeStore::default(), TestClock::at(now), spec)
}

fn at(r: &Rec, now: u64) {
    r.clock.set(now);
}

#[test]
fn peak_starts_at_nine_and_ends_before_eleven_pm_jst() {
    assert!(!is_peak(JST_0859), "08:59 is off-peak");
    assert!(is_peak(JST_0900), "09:00 is peak");
    assert!(is_peak(JST_2259), "22:59 is peak");
    assert!(!is_peak(JST_2300), "23:00 is off-peak");
}

#[test]
fn the_jst_date_rolls_over_at_midnight_tokyo_time() {
    assert_eq!(JstTime::from_unix_ms(JST_0859).date_compact(), "20261128");
    // 2026-11-27T23:59Z is already the 28th in Tokyo; 14:59Z on the 28th is still the 28th.
    assert_eq!(JstTime::from_unix_ms(JST_0900 - 9 * 3_600_000 - MINUTE).date_compact(), "20261127");
    assert_eq!(JstTime::from_unix_ms(0).date_compact(), "19700101");
    assert_eq!(JstTime::from_unix_ms(951_782_400_000).date_compact(), "20000229");
}

#[tokio::test]
async fn reconcile_follows_the_clock_at_the_peak_boundaries() {
    for (now, want) in [
        (JST_0859, Desired::OnDemand),
        (JST_0900, Desired::Provisioned),
        (JST_2259, Desired::Provisioned),
        (JST_2300, Desired::OnDemand),
    ] {
        let r = reconciler(now);
        let out = r.run(Trigger::Reconcile).await.unwrap();
        assert_eq!(out.state.desired, want, "at {now}");
    }
}

#[tokio::test]
async fn scaling_up_twice_buys_once() {
    let r = reconciler(JST_0900);
    let first = r.run(Trigger::ScaleUp).await.unwrap();
    assert_eq!(first.actions.len(), 1);
    assert_eq!(first.state.status, ThroughputStatus::Creating);
    let second = r.run(Trigger::ScaleUp).await.unwrap();
    assert!(second.actions.is_empty(), "{:?}", second.actions);
    assert_eq!(r.control.with(|f| f.creations), 1);
    assert_eq!(second.state.arn, first.state.arn);
}

#[tokio::test]
async fn a_retried_purchase_decided_on_the_same_state_reuses_the_client_token() {
    let r = reconciler(JST_0900);
    let token = client_token(&r.spec.name, JST_0900, 0);
    assert_eq!(token, "mangaassist-peak-20261128-v0");
    r.control.create(&r.spec, &token).await.unwrap();
    // The first invocation bought, then died before writing state; the retry finds it and buys nothing.
    let out = r.run(Trigger::ScaleUp).await.unwrap();
    assert!(out.actions.is_empty());
    assert_eq!(r.control.with(|f| f.creations), 1);
    assert!(out.state.arn.is_some());
}

#[tokio::test]
async fn scaling_down_with_nothing_provisioned_is_a_no_op() {
    let r = reconciler(JST_2300);
    let out = r.run(Trigger::ScaleDown).await.unwrap();
    assert!(out.actions.is_empty());
    assert_eq!(out.state.status, ThroughputStatus::NotProvisioned);
    assert_eq!(r.control.with(|f| (f.creations, f.deletions)), (0, 0));
    // Nothing changed the second time, so nothing is written.
    let saves = r.store.saves.load(Ordering::SeqCst);
    r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(r.store.saves.load(Ordering::SeqCst), saves);
}

#[tokio::test]
async fn scaling_down_deletes_what_scaling_up_bought() {
    let r = reconciler(JST_0900);
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    at(&r, JST_2300);
    let down = r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(down.actions, vec![Action::Deleted(up.state.arn.unwrap())]);
    assert_eq!(down.state.route(), None);
    assert!(r.control.with(|f| f.pts.is_empty()));
}

fn committed(now: u64, reported_end: Option<u64>) -> Rec {
    let mut r = reconciler(now);
    r.spec.commitment = Some(Commitment::OneMonth);
    r.control.with(|f| f.term_ends_ms = reported_end);
    r
}

#[tokio::test]
async fn a_commitment_term_purchase_is_kept_past_23_00_until_its_term_ends() {
    let term_ends = JST_0900 + 30 * 24 * 60 * MINUTE;
    let r = committed(JST_0900, Some(term_ends));
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    let arn = up.state.arn.clone().unwrap();
    assert_eq!(up.state.commitment_ends_ms, Some(term_ends), "the term end is recorded at purchase");
    r.control.set_all(ThroughputStatus::InService);

    at(&r, JST_2300);
    let down = r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(down.actions, vec![Action::KeptForCommitment(arn.clone())]);
    assert_eq!(r.control.with(|f| f.deletions), 0);
    assert_eq!(down.state.route(), Some(arn.as_str()), "paid for either way: still routed to");
    assert_eq!(down.state.commitment_ends_ms, Some(term_ends));
    // The 5-minute reconcile off-peak keeps it too.
    at(&r, JST_2300 + 5 * MINUTE);
    assert_eq!(r.run(Trigger::Reconcile).await.unwrap().actions, vec![Action::KeptForCommitment(arn.clone())]);

    // The first scale-down after the term: deleted.
    at(&r, term_ends + 14 * 60 * MINUTE);
    let after = r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(after.actions, vec![Action::Deleted(arn)]);
    assert_eq!(after.state.commitment_ends_ms, None);
    assert_eq!(r.control.with(|f| f.deletions), 1);
}

#[tokio::test]
async fn a_term_end_the_control_plane_does_not_report_is_counted_from_the_first_sighting() {
    let r = committed(JST_0900, None);
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    let recorded = up.state.commitment_ends_ms.unwrap();
    assert_eq!(recorded, JST_0900 + Commitment::OneMonth.term_ms());
    // Later passes keep the recorded end rather than counting again.
    at(&r, JST_2300);
    let down = r.run(Trigger::ScaleDown).await.unwrap();
    assert!(matches!(down.actions.as_slice(), [Action::KeptForCommitment(_)]), "{:?}", down.actions);
    assert_eq!(down.state.commitment_ends_ms, Some(recorded));
}

#[tokio::test]
async fn an_hourly_purchase_records_no_term_and_is_deleted_at_23_00() {
    let r = reconciler(JST_0900);
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    assert_eq!(up.state.commitment_ends_ms, None);
    at(&r, JST_2300);
    assert!(matches!(r.run(Trigger::ScaleDown).await.unwrap().actions.as_slice(), [Action::Deleted(_)]));
}

#[tokio::test]
async fn a_failed_creation_is_reported_then_bought_again_on_the_next_reconcile() {
    let r = reconciler(JST_0900);
    r.control.with(|f| f.fail_next = true);
    let first = r.run(Trigger::ScaleUp).await.unwrap();
    assert_eq!(first.state.status, ThroughputStatus::Failed);
    let err = first.state.last_error.clone().unwrap();
    assert!(err.contains("insufficient capacity"), "{err}");
    assert_eq!(first.state.route(), None);

    at(&r, JST_0900 + 5 * MINUTE);
    let second = r.run(Trigger::Reconcile).await.unwrap();
    let failed_arn = first.state.arn.unwrap();
    assert_eq!(second.actions.first(), Some(&Action::Deleted(failed_arn.clone())));
    assert!(matches!(second.actions.get(1), Some(Action::Created(arn)) if *arn != failed_arn));
    assert_eq!(second.state.status, ThroughputStatus::Creating);
    assert_eq!(second.state.last_error, None);
    assert_eq!(r.control.with(|f| (f.creations, f.deletions)), (2, 1));

    r.control.set_all(ThroughputStatus::InService);
    let third = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(third.state.route(), second.state.arn.as_deref());
}

#[tokio::test]
async fn a_lost_optimistic_lock_is_retried_on_fresh_state() {
    let r = reconciler(JST_0900);
    r.store.conflicts.store(2, Ordering::SeqCst);
    let out = r.run(Trigger::ScaleUp).await.unwrap();
    assert_eq!(out.attempts, 3);
    assert_eq!(r.control.with(|f| f.creations), 1, "the redone passes found what the first one bought");
    assert_eq!(r.store.state.lock().unwrap().as_ref().map(|s| s.version), Some(3));
    assert!(out.state.arn.is_some());
}

#[tokio::test]
async fn a_lock_lost_every_time_gives_up_after_the_retries() {
    let r = reconciler(JST_0900);
    r.store.conflicts.store(u32::MAX, Ordering::SeqCst);
    let err = r.run(Trigger::ScaleUp).await.unwrap_err();
    assert!(matches!(err, ThroughputError::Contended(4)), "{err}");
    assert_eq!(err.code(), "state_contended");
}

#[tokio::test]
async fn an_off_peak_alarm_holds_provisioned_for_an_hour_against_reconcile() {
    let r = reconciler(JST_2300 + 60 * MINUTE);
    let fired = r.run(Trigger::AlarmFiring).await.unwrap();
    assert_eq!(fired.state.desired, Desired::Provisioned);
    assert_eq!(fired.actions.len(), 1);

    at(&r, JST_2300 + 119 * MINUTE);
    let held = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(held.state.desired, Desired::Provisioned);
    assert!(held.actions.is_empty());

    at(&r, JST_2300 + 120 * MINUTE);
    let released = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(released.state.desired, Desired::OnDemand);
    assert!(matches!(released.actions.as_slice(), [Action::Deleted(_)]));
}

#[tokio::test]
async fn an_alarm_clearing_during_peak_changes_nothing() {
    let r = reconciler(JST_0900 + 60 * MINUTE);
    r.run(Trigger::AlarmFiring).await.unwrap();
    let out = r.run(Trigger::AlarmCleared).await.unwrap();
    assert_eq!(out.state.desired, Desired::Provisioned);
    assert!(out.actions.is_empty());
    assert_eq!(r.control.with(|f| f.creations), 1);
}

#[test]
fn only_an_in_service_throughput_is_routed_to() {
    let mut s = ThroughputState { arn: Some("arn:pt".into()), ..ThroughputState::default() };
    for status in [ThroughputStatus::Creating, ThroughputStatus::Failed, ThroughputStatus::Updating] {
        s.status = status;
        assert_eq!(s.route(), None, "{status:?}");
    }
    s.status = ThroughputStatus::InService;
    assert_eq!(provisioned_route(Some(&s)), Some("arn:pt"));
    assert_eq!(provisioned_route(None), None);
}

/// Marks the provisioned throughput `arn` in service.
fn in_service(r: &Rec, arn: &str) {
    r.control.with(|f| f.pts.iter_mut().filter(|p| p.arn == arn).for_each(|p| p.status = ThroughputStatus::InService));
}

#[tokio::test]
async fn changed_model_units_buy_the_new_size_route_to_it_once_in_service_then_delete_the_old() {
    let r = reconciler(JST_0900);
    let old = r.run(Trigger::ScaleUp).await.unwrap().state.arn.unwrap();
    in_service(&r, &old);
    assert_eq!(r.run(Trigger::Reconcile).await.unwrap().state.route(), Some(old.as_str()));

    // PT_MODEL_UNITS 1 -> 2 (a redeploy): Bedrock cannot resize, so a second one is bought beside it.
    let mut r = r;
    r.spec.model_units = 2;
    at(&r, JST_0900 + 5 * MINUTE);
    let buying = r.run(Trigger::Reconcile).await.unwrap();
    let [Action::Created(new)] = buying.actions.as_slice() else { panic!("{:?}", buying.actions) };
    assert_eq!(buying.state.route(), Some(old.as_str()), "the old size serves while the new one is created");
    assert_eq!((buying.state.model_units, buying.state.replacement_units), (1, 2));
    assert_eq!(buying.state.replacement_arn.as_deref(), Some(new.as_str()));
    assert_eq!(buying.state.replacement_status, ThroughputStatus::Creating);
    let names: Vec<String> = r.control.with(|f| f.pts.iter().map(|p| p.name.clone()).collect());
    assert_eq!(names, ["mangaassist-peak", "mangaassist-peak-next"]);

    // Still creating: nothing more is bought, nothing deleted.
    at(&r, JST_0900 + 10 * MINUTE);
    let waiting = r.run(Trigger::Reconcile).await.unwrap();
    assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
    assert_eq!(waiting.state.route(), Some(old.as_str()));

    // In service: routed to, and only then the old one goes.
    in_service(&r, new);
    at(&r, JST_0900 + 15 * MINUTE);
    let moved = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(moved.actions, vec![Action::Deleted(old.clone())]);
    assert_eq!(moved.state.route(), Some(new.as_str()));
    assert_eq!((moved.state.model_units, moved.state.replacement_arn.as_deref()), (2, None));
    assert_eq!(r.control.with(|f| (f.creations, f.deletions, f.pts.len())), (2, 1, 1));

    // And the next change goes back to the first name, now free.
    r.spec.model_units = 3;
    at(&r, JST_0900 + 20 * MINUTE);
    let again = r.run(Trigger::Reconcile).await.unwrap();
    assert!(matches!(again.actions.as_slice(), [Action::Created(_)]), "{:?}", again.actions);
    assert_eq!(again.state.route(), Some(new.as_str()));
    assert_eq!(r.control.with(|f| f.pts.iter().filter(|p| p.name == "mangaassist-peak").count()), 1);
}

#[tokio::test]
async fn a_size_changed_again_before_its_replacement_serves_never_holds_three() {
    let mut r = reconciler(JST_0900);
    let first = r.run(Trigger::ScaleUp).await.unwrap().state.arn.unwrap();
    in_service(&r, &first);
    r.spec.model_units = 2;
    at(&r, JST_0900 + 5 * MINUTE);
    let two = r.run(Trigger::Reconcile).await.unwrap().state.replacement_arn.unwrap();

    // 2 -> 3 while the 2-unit one is still creating: it serves nobody, so it goes before 3 is bought.
    r.spec.model_units = 3;
    at(&r, JST_0900 + 10 * MINUTE);
    let out = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(out.actions.first(), Some(&Action::Deleted(two)));
    assert!(matches!(out.actions.get(1), Some(Action::Created(_))), "{:?}", out.actions);
    assert_eq!(out.state.route(), Some(first.as_str()));
    assert_eq!(out.state.replacement_units, 3);
    assert!(r.control.with(|f| f.pts.len()) <= 2);

    // 3 -> back to 1: the one in service already fits; the creating 3-unit one is deleted.
    r.spec.model_units = 1;
    at(&r, JST_0900 + 15 * MINUTE);
    let back = r.run(Trigger::Reconcile).await.unwrap();
    assert!(matches!(back.actions.as_slice(), [Action::Deleted(_)]), "{:?}", back.actions);
    assert_eq!(back.state.route(), Some(first.as_str()));
    assert_eq!(back.state.replacement_arn, None);
    assert_eq!(r.control.with(|f| f.pts.len()), 1);
}

#[tokio::test]
async fn scaling_down_during_a_replacement_deletes_both() {
    let mut r = reconciler(JST_0900);
    let first = r.run(Trigger::ScaleUp).await.unwrap().state.arn.unwrap();
    in_service(&r, &first);
    r.spec.model_units = 2;
    at(&r, JST_0900 + 5 * MINUTE);
    r.run(Trigger::Reconcile).await.unwrap();
    at(&r, JST_2300);
    let down = r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(down.actions.len(), 2, "{:?}", down.actions);
    assert!(down.actions.iter().all(|a| matches!(a, Action::Deleted(_))));
    assert_eq!((down.state.route(), down.state.replacement_arn.as_deref()), (None, None));
    assert!(r.control.with(|f| f.pts.is_empty()));
}

// ---------------------------------------------------------------- the capacity plan

fn planned(now: u64, plan: PeakPlan, region: &str, offer: Option<Offer>) -> Rec {
    let r = reconciler(now).with_plan(PlanConfig { plan, region: region.to_owned() });
    r.control.with(|f| f.offer = offer);
    r
}

fn not_sold() -> Offer {
    Offer::NotSold { reason: "no PROVISIONED inference type".into(), sold_here: Vec::new() }
}

#[tokio::test]
async fn where_the_region_does_not_sell_it_the_peak_buys_nothing_runs_on_priority_and_asks_once() {
    let r = planned(JST_0900, PeakPlan::Provisioned, "ap-northeast-1", Some(not_sold()));
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    assert!(up.actions.is_empty(), "{:?}", up.actions);
    assert_eq!(up.state.route_record(), RouteRecord { arn: None, priority: true });
    let check = up.state.plan_check.clone().unwrap();
    assert_eq!(
        (check.key.as_str(), check.sold),
        ("anthropic.claude-haiku-4-5-20251001-v1:0:200k@ap-northeast-1", false)
    );
    // Every 5 minutes through the peak: no purchase, no error, no second question.
    for minutes in (5..=(14 * 60 - 5)).step_by(5) {
        at(&r, JST_0900 + minutes * MINUTE);
        let out = r.run(Trigger::Reconcile).await.unwrap();
        assert!(out.actions.is_empty() && out.state.last_error.is_none());
    }
    assert_eq!(r.control.with(|f| (f.offers_asked, f.creations)), (1, 0));
    // Off-peak the priority tier is off again.
    at(&r, JST_2300);
    let down = r.run(Trigger::ScaleDown).await.unwrap();
    assert_eq!(down.state.route_record(), RouteRecord::default());
}

#[tokio::test]
async fn a_change_of_model_or_region_asks_again() {
    let r = planned(JST_0900, PeakPlan::Provisioned, "ap-northeast-1", Some(not_sold()));
    r.run(Trigger::ScaleUp).await.unwrap();
    let r2 = Reconciler { plan: PlanConfig { plan: PeakPlan::Provisioned, region: "us-east-1".into() }, ..r };
    r2.control.with(|f| f.offer = Some(Offer::Sold));
    let out = r2.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(r2.control.with(|f| (f.offers_asked, f.creations)), (2, 1));
    assert!(out.state.plan_check.is_some_and(|c| c.sold));
}

#[tokio::test]
async fn where_it_is_sold_the_peak_buys_it_and_still_runs_priority_for_the_other_models() {
    let r = planned(JST_0900, PeakPlan::Provisioned, "us-east-1", Some(Offer::Sold));
    let up = r.run(Trigger::ScaleUp).await.unwrap();
    assert_eq!(r.control.with(|f| f.creations), 1);
    assert!(up.state.priority);
    r.control.set_all(ThroughputStatus::InService);
    let serving = r.run(Trigger::Reconcile).await.unwrap();
    assert!(serving.state.route_record().arn.is_some());
}

#[tokio::test]
async fn the_priority_plan_never_buys_and_deletes_what_an_earlier_plan_bought() {
    let old = planned(JST_0900, PeakPlan::Provisioned, "us-east-1", Some(Offer::Sold));
    old.run(Trigger::ScaleUp).await.unwrap();
    let r = Reconciler { plan: PlanConfig { plan: PeakPlan::Priority, region: "us-east-1".into() }, ..old };
    let out = r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(out.actions.len(), 1, "the earlier purchase is deleted: {:?}", out.actions);
    assert!(matches!(out.actions[0], Action::Deleted(_)));
    assert_eq!(out.state.route_record(), RouteRecord { arn: None, priority: true });
    assert_eq!(out.state.plan_check, None);
    assert_eq!(r.control.with(|f| (f.creations, f.offers_asked)), (1, 1));
}

#[tokio::test]
async fn an_unanswered_question_falls_back_to_the_documented_table_and_is_asked_again() {
    let r = planned(JST_0900, PeakPlan::Provisioned, "ap-northeast-1", None);
    r.control.with(|f| f.offer_fails = true);
    let out = r.run(Trigger::ScaleUp).await.unwrap();
    // The table sells no Claude Haiku 4.5 anywhere: nothing bought, nothing recorded, no failed pass.
    assert!(out.actions.is_empty() && out.state.plan_check.is_none() && out.state.last_error.is_none());
    r.run(Trigger::Reconcile).await.unwrap();
    assert_eq!(r.control.with(|f| (f.offers_asked, f.creations)), (2, 0));
}

#[tokio::test]
async fn the_latency_alarm_switches_the_priority_tier_on_off_peak() {
    let r = planned(JST_2300 + 60 * MINUTE, PeakPlan::Priority, "ap-northeast-1", None);
    assert!(!r.run(Trigger::Reconcile).await.unwrap().state.priority);
    assert!(r.run(Trigger::AlarmFiring).await.unwrap().state.priority);
    at(&r, JST_2300 + 70 * MINUTE);
    assert!(r.run(Trigger::Reconcile).await.unwrap().state.priority, "held by the alarm");
}

#[test]
fn state_write_retries_wait_under_a_ceiling_that_doubles() {
    for (attempt, ceiling) in [(1, 40), (2, 80), (3, 160)] {
        let waits: Vec<u64> = (0..200).map(|_| u64::try_from(backoff(attempt).as_millis()).unwrap()).collect();
        assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}: {waits:?}");
        assert!(waits.iter().any(|w| *w >= ceiling * 3 / 4), "attempt {attempt}: it does wait, up to the ceiling");
    }
}
