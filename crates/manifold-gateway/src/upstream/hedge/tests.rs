//! The hedge service alone, over a scripted attempt service, on paused time.

use super::*;
use crate::error::CallErrorKind;
use crate::upstream::fake::{ep, End, Fake, Req, Step};
use crate::upstream::Answer;
use manifold_config::policy::HedgeAfter;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn hedging(after: HedgeAfter, max: u32, budget: f64) -> HedgeLayer {
    HedgeLayer::new(Some(&HedgePolicy { after, max, budget }))
}

async fn call(layer: &HedgeLayer, fake: &Fake, req: Req) -> Tried<Answer> {
    let Ok(t) = layer.layer(fake.clone()).oneshot(Attempt::new(req)).await;
    t
}

/// Call `n`: on endpoint `n % 2`; the calls listed in `slow` hang, the others answer 200 after
/// `fast`.
fn script(fast: Duration, slow: Vec<usize>) -> Fake {
    Fake::new(move |n, _| Step {
        endpoint: (n % 2) as u64,
        after: fast,
        end: if slow.contains(&n) {
            End::Hang
        } else {
            End::Status(200, None)
        },
    })
}

#[tokio::test(start_paused = true)]
async fn a_straggler_is_hedged_after_the_fixed_delay_on_another_endpoint_and_cancelled() {
    let layer = hedging(HedgeAfter::Fixed(20 * MS), 1, 1.0);
    let fake = script(2 * MS, vec![0]);
    // Enough calls in the window for the budget to allow one hedge.
    for _ in 0..3 {
        layer.hedging.as_ref().expect("on").budget.deposit();
    }
    let start = Instant::now();
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.is_good());
    assert_eq!(t.endpoint, Some(ep(1)));
    assert_eq!(
        start.elapsed(),
        22 * MS,
        "hedged at 20 ms, answered 2 ms later"
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].at - calls[0].at, 20 * MS);
    assert_eq!(
        calls[1].avoid,
        Some(ep(0)),
        "the hedge avoids the straggler's endpoint"
    );
    assert!(
        calls[0].cancelled.load(Ordering::SeqCst),
        "the loser was cancelled"
    );
    assert!(!calls[1].cancelled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_is_not_hedged() {
    let layer = hedging(HedgeAfter::Fixed(20 * MS), 1, 1.0);
    let fake = script(5 * MS, vec![]);
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.is_good());
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_fires_at_the_estimated_percentile() {
    let layer = hedging(HedgeAfter::Percentile(95.0), 1, 1.0);
    // Before enough answers: the fixed fallback.
    let fake = Fake::new(|n, _| Step {
        endpoint: (n % 2) as u64,
        after: if n == 0 { Duration::from_secs(10) } else { MS },
        end: End::Status(200, None),
    });
    let start = Instant::now();
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.is_good());
    assert_eq!(start.elapsed(), latency::FALLBACK + MS);

    // 96 first attempts answer in 1..=96 ms (one each, shuffled); hedges never answer, so
    // only the first attempts' latencies are learnt. p95 is then 92 ms.
    let layer = hedging(HedgeAfter::Percentile(95.0), 1, 1.0);
    let firsts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fake = Fake::new(move |_, avoid| match avoid {
        None => {
            let k = firsts.fetch_add(1, Ordering::SeqCst);
            Step {
                endpoint: 0,
                after: Duration::from_millis((k * 37 % 96) as u64 + 1),
                end: End::Status(200, None),
            }
        }
        Some(_) => Step {
            endpoint: 1,
            after: MS,
            end: End::Hang,
        },
    });
    for _ in 0..96 {
        let t = call(&layer, &fake, Req::new(true, None)).await;
        assert_eq!(t.endpoint, Some(ep(0)));
    }
    assert_eq!(layer.hedging.as_ref().expect("on").delay(), 92 * MS);
    let fake = script(MS, vec![0]);
    let start = Instant::now();
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.is_good());
    assert_eq!(start.elapsed(), 93 * MS, "hedged at p95 = 92 ms");
    assert!(fake.calls()[0].cancelled.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn hedges_are_paid_from_their_budget_and_need_an_idempotent_call() {
    // Every first attempt straggles (50 ms), the hedge would answer in 1 ms.
    let fake = Fake::new(|n, avoid| Step {
        endpoint: (n % 2) as u64,
        after: if avoid.is_some() { MS } else { 50 * MS },
        end: End::Status(200, None),
    });
    let layer = hedging(HedgeAfter::Fixed(10 * MS), 1, 0.05);
    for _ in 0..200 {
        let _ = call(&layer, &fake, Req::new(true, None)).await;
    }
    let hedges = fake.calls().iter().filter(|c| c.avoid.is_some()).count();
    assert!(hedges <= 10, "{hedges} hedges for 200 calls at 5%");
    assert!(hedges >= 8, "the budget is used: {hedges}");

    let fake = script(50 * MS, vec![]);
    let layer = hedging(HedgeAfter::Fixed(10 * MS), 1, 1.0);
    for _ in 0..20 {
        let _ = call(&layer, &fake, Req::new(false, None)).await;
    }
    assert_eq!(
        fake.calls().len(),
        20,
        "a non-idempotent call is never hedged"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_waits_for_the_other_attempt_and_all_failures_are_told() {
    let layer = hedging(HedgeAfter::Fixed(10 * MS), 1, 1.0);
    layer.hedging.as_ref().expect("on").budget.deposit();
    // The first fails at 15 ms (after the hedge went at 10 ms), the hedge answers at 30 ms.
    let fake = Fake::new(|n, _| match n {
        0 => Step {
            endpoint: 0,
            after: 15 * MS,
            end: End::Fail(CallErrorKind::Io),
        },
        _ => Step {
            endpoint: 1,
            after: 20 * MS,
            end: End::Status(200, None),
        },
    });
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.is_good(), "the other attempt's answer wins");
    assert_eq!(t.earlier.len(), 1);

    let fake = Fake::new(|n, _| Step {
        endpoint: (n % 2) as u64,
        after: Duration::from_millis(15 + 10 * n as u64),
        end: End::Fail(CallErrorKind::Io),
    });
    layer.hedging.as_ref().expect("on").budget.deposit();
    let t = call(&layer, &fake, Req::new(true, None)).await;
    assert!(t.result.is_err());
    assert_eq!(t.earlier.len(), 1, "the first failure is in the record");
}
