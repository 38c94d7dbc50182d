//! The retry service alone, over a scripted attempt service, on paused time.

use super::*;
use crate::upstream::error::Ended;
use crate::upstream::fake::{ep, End, Fake, Req, Step};
use crate::upstream::Answer;

const MS: Duration = Duration::from_millis(1);

fn policy(attempts: u32, budget: f64, min: u32, on: &[RetryOn]) -> Arc<Retrying> {
    Arc::new(Retrying::new(
        "u",
        Duration::from_secs(5),
        &RetryPolicy {
            attempts,
            budget,
            min_per_second: min,
            backoff: 25 * MS,
            on: on.to_vec(),
        },
    ))
}

const ALL_ON: [RetryOn; 4] = [
    RetryOn::Connect,
    RetryOn::Reset,
    RetryOn::Timeout,
    RetryOn::Status(503),
];

/// Endpoint `n % 2`, ending as `ends[n]` (the last one repeating) after 1 ms.
fn scripted(ends: Vec<End>) -> Fake {
    Fake::new(move |n, _| Step {
        endpoint: (n % 2) as u64,
        after: MS,
        end: ends[n.min(ends.len() - 1)].clone(),
    })
}

async fn call(p: &Arc<Retrying>, fake: &Fake, req: Req) -> Result<Answer, CallError> {
    RetryLayer::new(Arc::clone(p))
        .layer(fake.clone())
        .oneshot(req)
        .await
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_call_is_retried_on_another_endpoint_until_it_succeeds() {
    let p = policy(3, 0.2, 10, &ALL_ON);
    let fake = scripted(vec![
        End::Fail(CallErrorKind::Connect),
        End::Status(503, None),
        End::Status(200, None),
    ]);
    let answer = call(&p, &fake, Req::new(true, None)).await.expect("answer");
    assert_eq!(answer.status, 200);
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    // Each retry avoids the endpoint of the attempt before it.
    assert_eq!(calls[0].avoid, None);
    assert_eq!(calls[1].avoid, Some(ep(0)));
    assert_eq!(calls[2].avoid, Some(ep(1)));
    // Backoff: within [0, 25 ms] then [0, 50 ms] after each 1 ms attempt.
    let gap1 = calls[1].at - calls[0].at;
    let gap2 = calls[2].at - calls[1].at;
    assert!(gap1 >= MS && gap1 <= 27 * MS, "{gap1:?}");
    assert!(gap2 >= MS && gap2 <= 52 * MS, "{gap2:?}");
    let trail = answer.trail.expect("a retried success keeps its trail");
    assert_eq!(trail.attempts, 3);
    assert_eq!(
        trail.records[0].ended,
        Ended::Failed(CallErrorKind::Connect)
    );
    assert_eq!(trail.records[1].ended, Ended::Answered(503));
}

#[tokio::test(start_paused = true)]
async fn a_first_time_success_has_no_trail_and_one_attempt() {
    let p = policy(3, 0.2, 10, &ALL_ON);
    let fake = scripted(vec![End::Status(200, None)]);
    let answer = call(&p, &fake, Req::new(true, None)).await.expect("answer");
    assert!(answer.trail.is_none());
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_call_is_retried_on_connect_only() {
    let p = policy(3, 0.2, 10, &ALL_ON);
    let fake = scripted(vec![
        End::Fail(CallErrorKind::Connect),
        End::Status(503, None),
    ]);
    let answer = call(&p, &fake, Req::new(false, None))
        .await
        .expect("answer");
    assert_eq!(
        answer.status, 503,
        "the 503 is the answer: something was sent"
    );
    assert_eq!(fake.calls().len(), 2);
    let trail = answer.trail.expect("trail");
    assert_eq!(trail.stopped, Some(Stop::NotIdempotent));
    assert_eq!(trail.endpoint(), Some("e1"));

    for kind in [CallErrorKind::Io, CallErrorKind::Timeout] {
        let fake = scripted(vec![End::Fail(kind.clone())]);
        let e = call(&p, &fake, Req::new(false, None)).await.unwrap_err();
        assert_eq!(e.kind, kind);
        assert_eq!(fake.calls().len(), 1, "{kind:?} is not retried for a POST");
    }
}

#[tokio::test(start_paused = true)]
async fn outcomes_outside_on_and_deadlines_are_never_retried() {
    let p = policy(3, 0.2, 10, &[RetryOn::Connect]);
    for end in [
        End::Status(503, None),
        End::Status(500, None),
        End::Fail(CallErrorKind::Timeout),
        End::Fail(CallErrorKind::Io),
    ] {
        let fake = scripted(vec![end.clone()]);
        let _ = call(&p, &fake, Req::new(true, None)).await;
        assert_eq!(fake.calls().len(), 1, "{end:?} is not in `on`");
    }
    let p = policy(3, 0.2, 10, &ALL_ON);
    for kind in [CallErrorKind::Deadline, CallErrorKind::BreakerOpen] {
        let fake = scripted(vec![End::Fail(kind.clone())]);
        let e = call(&p, &fake, Req::new(true, None)).await.unwrap_err();
        assert_eq!(fake.calls().len(), 1, "{kind:?}");
        let trail = e.trail.expect("trail");
        assert_eq!((trail.attempts, trail.stopped), (1, None));
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_bound_the_tries_and_the_error_tells_each_one() {
    let p = policy(3, 0.2, 10, &ALL_ON);
    let fake = scripted(vec![
        End::Fail(CallErrorKind::Connect),
        End::Fail(CallErrorKind::Timeout),
        End::Fail(CallErrorKind::Io),
    ]);
    let e = call(&p, &fake, Req::new(true, None)).await.unwrap_err();
    assert_eq!(e.kind, CallErrorKind::Io);
    assert_eq!(fake.calls().len(), 3);
    let trail = e.trail.as_deref().expect("trail");
    assert_eq!(trail.attempts, 3);
    assert_eq!(trail.stopped, Some(Stop::Attempts));
    let shown = e.to_string();
    assert!(
        shown.ends_with(
            "(upstream `u`, 3 attempts: e0 connect, e1 timeout, e0 io; not retried: attempts)"
        ),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_the_timeout() {
    let p = policy(2, 0.2, 10, &ALL_ON);
    let fake = scripted(vec![End::Status(503, Some("2")), End::Status(200, None)]);
    let start = Instant::now();
    let answer = call(&p, &fake, Req::new(true, None)).await.expect("answer");
    assert_eq!(answer.status, 200);
    let calls = fake.calls();
    assert!(calls[1].at - calls[0].at >= Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(2) + 30 * MS);

    // Longer than the 5 s timeout: the 503 is the answer, at once.
    let fake = scripted(vec![End::Status(503, Some("60"))]);
    let start = Instant::now();
    let answer = call(&p, &fake, Req::new(true, None)).await.expect("answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.trail.expect("trail").stopped, Some(Stop::RetryAfter));
    assert!(start.elapsed() < 10 * MS);
}

#[tokio::test(start_paused = true)]
async fn no_retry_waits_past_the_deadline() {
    let p = policy(3, 0.2, 10, &ALL_ON);
    // Retry-After 1 s, deadline in 500 ms: no retry, and no waiting.
    let fake = scripted(vec![End::Status(503, Some("1")), End::Status(200, None)]);
    let start = Instant::now();
    let deadline = start + 500 * MS;
    let answer = call(&p, &fake, Req::new(true, Some(deadline)))
        .await
        .expect("answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.trail.expect("trail").stopped, Some(Stop::Deadline));
    assert_eq!(fake.calls().len(), 1);
    assert!(Instant::now() < deadline);

    // Whatever the jitter, a call that keeps failing ends before its deadline.
    for _ in 0..50 {
        let p = policy(50, 10.0, 1000, &ALL_ON);
        let fake = scripted(vec![End::Fail(CallErrorKind::Connect)]);
        let start = Instant::now();
        let deadline = start + 60 * MS;
        let e = call(&p, &fake, Req::new(true, Some(deadline)))
            .await
            .unwrap_err();
        // The scripted attempt takes 1 ms and is not bounded (the attempt service bounds real
        // ones by the deadline): no attempt starts at or past the deadline.
        assert!(Instant::now() <= deadline + MS, "ended past the deadline");
        let trail = e.trail.expect("trail");
        assert_eq!(trail.stopped, Some(Stop::Deadline));
        for c in fake.calls() {
            assert!(c.at < deadline);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_makes_the_first_error_the_answer() {
    // 20% of 100 calls, no reserve: at most 20 retries however much fails.
    let p = policy(3, 0.2, 0, &ALL_ON);
    let fake = scripted(vec![End::Status(503, None)]);
    let mut exhausted = 0;
    for _ in 0..100 {
        let answer = call(&p, &fake, Req::new(true, None)).await.expect("answer");
        if answer.trail.expect("trail").stopped == Some(Stop::BudgetExhausted) {
            exhausted += 1;
        }
    }
    let sent = fake.calls().len();
    assert!(sent <= 120, "{sent} upstream requests for 100 calls");
    assert!(sent >= 110, "the budget is used, not refused: {sent}");
    assert!(exhausted > 0);
    // Without the budget (a huge ratio) the same failures cost 3 requests a call.
    let p = policy(3, 100.0, 0, &ALL_ON);
    let fake = scripted(vec![End::Status(503, None)]);
    for _ in 0..100 {
        let _ = call(&p, &fake, Req::new(true, None)).await;
    }
    assert_eq!(fake.calls().len(), 300);
}
