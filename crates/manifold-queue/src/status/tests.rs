use std::time::Duration;

use super::*;

fn task() -> Task {
    Task::new(
        "k:ship",
        "shipping",
        "POST",
        "/labels",
        vec![],
        b"{}".to_vec(),
    )
}

fn limits() -> StatusLimits {
    StatusLimits {
        result_ttl: Duration::from_secs(60),
        max_result_bytes: 16,
        max_statuses: 10,
        max_status_bytes: 1 << 20,
    }
}

#[test]
fn transitions_record_attempts_errors_result_and_expiry() {
    let mut t = task();
    let l = limits();
    let s = Change::of(&t, State::Queued, None, 1_000, &l).apply(None);
    assert_eq!(
        (s.status, s.attempts, s.expires_at),
        (State::Queued, 0, None)
    );
    let s = Change::of(&t, State::Delivering, None, 1_001, &l).apply(Some(s));
    t.attempts = 1;
    t.last_error = Some("upstream: status 503".into());
    let s = Change::of(&t, State::Retrying, None, 1_002, &l).apply(Some(s));
    assert_eq!(s.last_error.as_deref(), Some("upstream: status 503"));
    let outcome = Outcome {
        status: 201,
        body: Some(br#"{"label":"L-1"}"#.to_vec()),
    };
    let s = Change::of(&t, State::Done, Some(outcome), 1_003, &l).apply(Some(s));
    assert_eq!(s.status, State::Done);
    assert_eq!(s.result_status, Some(201));
    assert_eq!(s.result, Some(serde_json::json!({"label": "L-1"})));
    assert!(!s.result_omitted);
    assert_eq!(s.expires_at, Some(61_003));
    assert!(!s.expired(61_002) && s.expired(61_003));
    let states: Vec<State> = s.history.iter().map(|h| h.status).collect();
    assert_eq!(
        states,
        [
            State::Queued,
            State::Delivering,
            State::Retrying,
            State::Done
        ]
    );
    // The public view has the contract's keys and neither the history nor a hash.
    let public = s.public();
    for key in [
        "task_id",
        "status",
        "attempts",
        "last_error",
        "updated_at",
        "result_status",
        "result",
    ] {
        assert!(public.get(key).is_some(), "{key} missing");
    }
    assert!(public.get("history").is_none() && public.get("auth").is_none());
    assert_eq!(public["status"], "done");
}

#[test]
fn large_or_binary_results_are_omitted_and_text_is_kept_as_a_string() {
    let t = task();
    let l = limits();
    let done = |body: Option<Vec<u8>>| {
        Change::of(&t, State::Done, Some(Outcome { status: 200, body }), 1, &l).apply(None)
    };
    let big = done(Some(vec![b'1'; 17]));
    assert!(big.result_omitted && big.result.is_none());
    assert_eq!(big.public()["result_omitted"], true);
    let unread = done(None);
    assert!(unread.result_omitted);
    let text = done(Some(b"OK label".to_vec()));
    assert_eq!(text.result, Some(serde_json::json!("OK label")));
    let binary = done(Some(vec![0xff, 0xfe]));
    assert!(binary.result_omitted);
    let empty = done(Some(Vec::new()));
    assert!(!empty.result_omitted && empty.result.is_none());
    assert!(done(Some(b"[1]".to_vec()))
        .public()
        .get("result_omitted")
        .is_none());
}

#[test]
fn history_and_errors_are_bounded() {
    let mut t = task();
    t.last_error = Some("x".repeat(10_000));
    let l = limits();
    let mut s = None;
    for i in 0..100 {
        t.attempts = i;
        s = Some(Change::of(&t, State::Retrying, None, u64::from(i), &l).apply(s));
    }
    let s = s.unwrap();
    assert_eq!(s.history.len(), MAX_HISTORY);
    assert_eq!(s.history.last().unwrap().attempts, 99);
    assert!(s.last_error.unwrap().len() <= MAX_ERROR_BYTES + 4);
}

#[test]
fn a_replay_starts_over_without_the_old_result() {
    let t = task();
    let l = limits();
    let outcome = Outcome {
        status: 200,
        body: Some(b"{}".to_vec()),
    };
    let s = Change::of(&t, State::Done, Some(outcome), 1, &l).apply(None);
    let s = Change::of(&t, State::Queued, None, 2, &l).apply(Some(s));
    assert_eq!(s.status, State::Queued);
    assert!(s.result.is_none() && s.result_status.is_none() && s.expires_at.is_none());
}

#[test]
fn authorization_is_stored_as_a_hash_and_checked() {
    let mut t = task();
    t.status_auth = Some(auth_hash(b"Bearer alice"));
    let s = Change::of(&t, State::Queued, None, 1, &limits()).apply(None);
    let stored = String::from_utf8(s.encode()).unwrap();
    assert!(!stored.contains("alice"), "{stored}");
    assert!(s.allows(Some(b"Bearer alice")));
    assert!(!s.allows(Some(b"Bearer mallory")));
    assert!(!s.allows(Some(b"")));
    assert!(!s.allows(None));
    let open = Change::of(&task(), State::Queued, None, 1, &limits()).apply(None);
    assert!(open.allows(None) && open.allows(Some(b"anything")));
}

#[tokio::test]
async fn watchers_wake_waiters_and_clean_up() {
    let w = Watchers::default();
    assert!(w.is_empty());
    {
        let a = w.watch("t1");
        let b = w.watch("t1");
        assert_eq!(w.len(), 1);
        let changed = a.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        w.notify("t2");
        w.notify("t1");
        tokio::time::timeout(Duration::from_secs(5), changed)
            .await
            .expect("woken");
        drop(b);
        assert_eq!(w.len(), 1, "a still waits");
    }
    assert!(w.is_empty(), "the last waiter removes the entry");
}

#[tokio::test(start_paused = true)]
async fn long_poll_returns_at_once_when_final_or_unknown_and_at_the_deadline_otherwise() {
    let w = Watchers::default();
    let l = limits();
    let t = task();
    let done = Change::of(&t, State::Done, None, 1, &l).apply(None);
    let got = long_poll(&w, &t.id, Duration::from_secs(30), || {
        Ok(Some(done.clone()))
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap().status, State::Done);
    assert!(long_poll(&w, "nope", Duration::from_secs(30), || Ok(None))
        .await
        .unwrap()
        .is_none());
    let queued = Change::of(&t, State::Queued, None, 1, &l).apply(None);
    let start = tokio::time::Instant::now();
    let reads = std::sync::atomic::AtomicUsize::new(0);
    let got = long_poll(&w, &t.id, Duration::from_secs(5), || {
        reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(queued.clone()))
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap().status, State::Queued);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    // No wake-up came: it read once and slept (no polling loop).
    assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The local status file after a full disk: redb refuses every operation until reopened, so
/// without a reopen no status would move again until a restart.
#[tokio::test]
async fn local_statuses_move_again_once_a_full_disk_has_room() {
    use std::sync::atomic::Ordering;

    use crate::embedded::handle::flaky::Disk;
    use crate::status::local::LocalStatus;
    use crate::status::tracked::StatusStore as _;

    let disk = Disk::default();
    let store = LocalStatus::open_with(disk.opener(), limits()).unwrap();
    let t = task();
    let at = |state| Change::of(&t, state, None, 1_000, &limits());
    store.record(at(State::Queued), false).await;
    disk.full.store(true, Ordering::SeqCst);
    store.record(at(State::Delivering), false).await;
    disk.full.store(false, Ordering::SeqCst);
    store.record(at(State::Retrying), false).await;
    let s = store.get(&t.id).await.unwrap().expect("a status");
    assert_eq!(
        s.status,
        State::Retrying,
        "the write after the full disk landed"
    );
}
