//! The endpoint set alone: picks and leases on a clock the tests hold (no sockets).

use super::*;
use manifold_config::policy::Balance;
use proptest::prelude::*;

/// Upstream `u` over `n` IP-literal endpoints, with these policies.
fn upstream(
    n: usize,
    balance: Balance,
    breaker: Option<BreakerPolicy>,
) -> manifold_config::Upstream {
    let list: Vec<String> = (0..n)
        .map(|i| format!("\"http://10.0.0.{}:80\"", i + 1))
        .collect();
    let src = format!(
        "[upstreams.u]\nendpoints = [{}]\ntimeout = \"1s\"\n\
         [routes.p]\npath = \"/p\"\nproxy = \"u\"\n",
        list.join(", ")
    );
    let mut config = manifold_config::compile(std::path::Path::new("test.toml"), &src)
        .expect("the test config compiles");
    let mut up = config.upstreams.remove(0);
    up.policies.balance = balance;
    up.policies.circuit_breaker = breaker;
    up
}

fn breaker(min_requests: u32, max_ejected: f64) -> BreakerPolicy {
    BreakerPolicy {
        failure_rate: 0.5,
        min_requests,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        max_ejected,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pick at `now` and finish `after` later with `outcome`; the endpoint's index in the set.
fn attempt(e: &Endpoints, now: Instant, after: Duration, outcome: Outcome<'_>) -> usize {
    let mut lease = e.shared.pick(now, None).expect("a pick");
    let i = index(e, lease.id());
    lease.settle(now + after, outcome);
    i
}

fn index(e: &Endpoints, id: EndpointId) -> usize {
    e.current()
        .iter()
        .position(|(x, _)| *x == id)
        .expect("a current endpoint")
}

#[test]
fn p2c_sends_to_the_fast_endpoint_until_it_is_loaded_or_the_slow_one_decays() {
    let e = Endpoints::new(&upstream(2, Balance::P2c, None));
    let t0 = Instant::now();
    let ids: Vec<EndpointId> = e.current().iter().map(|(id, _)| *id).collect();
    // Endpoint 0 answered in 200 ms (a peak, believed at once); endpoint 1 has the default 30.
    e.shared.snapshot()[0].load.observe(t0, ms(200));
    let now = t0;
    // Held leases: the fast one takes them while 30 ms × (k + 1) is below the slow one's
    // 200 ms × (j + 1): about 35 of 40, and the slow one still gets its share.
    let held: Vec<Lease> = (0..40)
        .map(|_| e.shared.pick(now, None).expect("a pick"))
        .collect();
    let fast = held.iter().filter(|l| l.id() == ids[1]).count();
    assert!(
        (30..=37).contains(&fast),
        "{fast} of 40 went to the fast one"
    );
    drop(held);
    for (id, _) in e.current() {
        let ep = &e.shared.snapshot()[index(&e, id)];
        assert_eq!(ep.load.in_flight(), 0, "dropped leases release their count");
    }

    // Unloaded, the fast one wins every pair…
    assert!((0..50).all(|_| attempt(&e, now, ms(10), Outcome::Answered(StatusCode::OK)) == 1));
    // … until the slow one's peak, not renewed, has decayed below the fast one's fresh answers.
    let later = now + Duration::from_secs(60);
    let picks: Vec<usize> = (0..3)
        .map(|k| {
            attempt(
                &e,
                later + ms(10 * k),
                ms(10),
                Outcome::Answered(StatusCode::OK),
            )
        })
        .collect();
    assert!(
        picks.contains(&0),
        "the idle endpoint is tried again: {picks:?}"
    );
}

#[test]
fn an_endpoint_whose_estimate_decayed_away_does_not_take_a_whole_burst() {
    let e = Endpoints::new(&upstream(2, Balance::P2c, None));
    let t0 = Instant::now();
    // Endpoint 0 failed once (a 1 s penalty) and then sat idle for three hours: its estimate
    // has decayed to zero. Endpoint 1 answers in 5 ms.
    let set = e.shared.snapshot();
    set[0].load.observe(t0, Duration::from_secs(1));
    let later = t0 + Duration::from_secs(3 * 3600);
    set[1].load.observe(later, ms(5));
    assert_eq!(set[0].load.estimate_ns(later), 0.0);
    // A burst of 40 before anyone answers: the idle endpoint is tried (nothing in flight, it
    // costs nothing), but once it holds attempts it is priced as a fresh endpoint, not as
    // free: the burst is shared, not all sent to the endpoint nobody knows anything about.
    let held: Vec<Lease> = (0..40)
        .map(|_| e.shared.pick(later, None).expect("a pick"))
        .collect();
    let idle = held.iter().filter(|l| l.id() == set[0].id).count();
    assert!(
        (1..=20).contains(&idle),
        "{idle} of 40 went to the idle one"
    );
    drop(held);
}

#[test]
fn a_failure_makes_an_endpoint_look_as_slow_as_the_timeout() {
    let e = Endpoints::new(&upstream(2, Balance::P2c, None));
    let t0 = Instant::now();
    // A refused connect fails at once: counted as the upstream's 1 s timeout, not 0 ms.
    let i = attempt(
        &e,
        t0,
        Duration::ZERO,
        Outcome::Failed(&CallErrorKind::Connect),
    );
    let set = e.shared.snapshot();
    assert!(set[i].load.cost(t0) >= 1e9, "{}", set[i].load.cost(t0));
    assert!((0..50).all(|_| attempt(&e, t0, ms(5), Outcome::Answered(StatusCode::OK)) != i));
    // A 503 too; a 404 is an answer.
    let j = 1 - i;
    let mut l = e.shared.pick(t0, Some(set[i].id)).expect("a pick");
    assert_eq!(index(&e, l.id()), j);
    l.settle(
        t0 + ms(5),
        Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE),
    );
    assert!(set[j].load.cost(t0 + ms(5)) >= 1e9);
    assert_eq!(
        judge(Outcome::Answered(StatusCode::NOT_FOUND)).0,
        Verdict::Success
    );
    assert_eq!(
        judge(Outcome::Failed(&CallErrorKind::Deadline)).0,
        Verdict::Neutral
    );
    assert_eq!(
        judge(Outcome::Failed(&CallErrorKind::Input)),
        (Verdict::Neutral, Sample::None)
    );
}

#[test]
fn an_endpoint_refusing_fast_with_429_does_not_attract_the_traffic() {
    let e = Endpoints::new(&upstream(2, Balance::P2c, Some(breaker(4, 0.5))));
    let t0 = Instant::now();
    let ids: Vec<EndpointId> = e.current().iter().map(|(id, _)| *id).collect();
    // Endpoint 0 sheds: 429 in 1 ms. Endpoint 1 answers in 20 ms. Each answers what it
    // answers for 200 attempts; the shedding one must not end up with most of them.
    let mut shed = 0;
    for k in 0..200u64 {
        let now = t0 + ms(25 * k);
        let mut l = e.shared.pick(now, None).expect("a pick");
        if l.id() == ids[0] {
            shed += 1;
            l.settle(
                now + ms(1),
                Outcome::Answered(StatusCode::TOO_MANY_REQUESTS),
            );
        } else {
            l.settle(now + ms(20), Outcome::Answered(StatusCode::OK));
        }
    }
    assert!(
        shed < 50,
        "{shed} of 200 went to the endpoint answering 429"
    );
    // Nor is it ejected for protecting itself.
    assert_eq!(e.ejected(), 0);
    assert_eq!(
        judge(Outcome::Failed(&CallErrorKind::Status(429))),
        (Verdict::Neutral, Sample::Penalty)
    );
}

#[test]
fn avoid_prefers_another_endpoint_where_there_is_one() {
    for balance in [Balance::P2c, Balance::RoundRobin] {
        let e = Endpoints::new(&upstream(3, balance, None));
        let avoid = e.current()[1].0;
        for _ in 0..50 {
            let l = e.pick(Some(avoid)).expect("a pick");
            assert_ne!(l.id(), avoid, "{balance:?}");
        }
        let one = Endpoints::new(&upstream(1, balance, None));
        let only = one.current()[0].0;
        assert_eq!(one.pick(Some(only)).expect("a pick").id(), only);
    }
}

#[test]
fn a_failing_endpoint_is_ejected_probed_once_and_restored() {
    let e = Endpoints::new(&upstream(2, Balance::RoundRobin, Some(breaker(4, 0.5))));
    let t0 = Instant::now();
    let ids: Vec<EndpointId> = e.current().iter().map(|(id, _)| *id).collect();
    // Round robin: 0 fails, 1 answers, four times; 0's window is 4 of 4 failed.
    for _ in 0..4 {
        for (i, id) in ids.iter().enumerate() {
            let mut l = e.shared.pick(t0, None).expect("a pick");
            assert_eq!(l.id(), *id);
            if i == 0 {
                l.settle(t0, Outcome::Failed(&CallErrorKind::Timeout));
            } else {
                l.settle(t0, Outcome::Answered(StatusCode::OK));
            }
        }
    }
    assert_eq!(e.ejected(), 1);
    assert!((0..20).all(|_| attempt(&e, t0, ms(1), Outcome::Answered(StatusCode::OK)) == 1));

    // Endpoint 1 failing too is not ejected: the cap keeps one of two serving.
    for _ in 0..10 {
        attempt(&e, t0, ms(1), Outcome::Failed(&CallErrorKind::Io));
    }
    assert_eq!(e.ejected(), 1);

    // After open_for, one pick (and only one) probes 0, the others go to 1.
    let t1 = t0 + Duration::from_secs(5);
    let probe = e.shared.pick(t1, None).expect("a pick");
    assert!(probe.probe && probe.id() == ids[0]);
    let others: Vec<Lease> = (0..5)
        .map(|_| e.shared.pick(t1, None).expect("a pick"))
        .collect();
    assert!(others.iter().all(|l| l.id() == ids[1] && !l.probe));
    drop(others);
    // A probe dropped unfinished says nothing: the probe passes to the next pick.
    drop(probe);
    let mut probe = e.shared.pick(t1, None).expect("a pick");
    assert!(probe.probe && probe.id() == ids[0]);
    probe.settle(t1 + ms(3), Outcome::Answered(StatusCode::OK));
    assert_eq!(e.ejected(), 0);
    assert_eq!(e.shared.ejected.load(Ordering::Relaxed), 0);
}

#[test]
fn with_every_endpoint_open_a_pick_fails_at_once_naming_the_upstream() {
    let e = Endpoints::new(&upstream(1, Balance::P2c, Some(breaker(2, 0.5))));
    let t0 = Instant::now();
    for _ in 0..2 {
        attempt(
            &e,
            t0,
            Duration::ZERO,
            Outcome::Failed(&CallErrorKind::Connect),
        );
    }
    let err = e.shared.pick(t0 + ms(1), None).expect_err("all open");
    assert_eq!(err.kind, CallErrorKind::BreakerOpen);
    assert_eq!(err.kind.client_status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.message.contains("upstream `u`"), "{err}");
    // A failed probe reopens it for twice as long: 10 s.
    let t1 = t0 + Duration::from_secs(5);
    let mut probe = e.shared.pick(t1, None).expect("the probe");
    probe.settle(t1, Outcome::Failed(&CallErrorKind::Connect));
    assert!(e.shared.pick(t1 + Duration::from_secs(9), None).is_err());
    assert!(e.shared.pick(t1 + Duration::from_secs(10), None).is_ok());
}

#[test]
fn re_resolution_keeps_the_state_of_addresses_that_stay() {
    let e = Endpoints::new(&upstream(2, Balance::P2c, None));
    let configured: Vec<EndpointId> = e.current().iter().map(|(id, _)| *id).collect();
    let a: SocketAddr = "10.1.0.1:80".parse().expect("addr");
    let b: SocketAddr = "10.1.0.2:80".parse().expect("addr");
    let c: SocketAddr = "10.1.0.3:80".parse().expect("addr");
    e.shared.replace(&[(1, vec![a, b])]);
    let now = e.current();
    assert_eq!(now.len(), 3);
    assert_eq!(now[0].0, configured[0], "endpoint 0 is untouched");
    assert!(now[1].1.ends_with("(10.1.0.1:80)") && now[2].1.ends_with("(10.1.0.2:80)"));
    let kept = now[2].0;
    e.shared.replace(&[(1, vec![b, c])]);
    let next = e.current();
    assert_eq!(next.len(), 3);
    assert_eq!(next[1].0, kept, "b keeps its id (and state)");
    assert!(next[2].1.ends_with("(10.1.0.3:80)") && next[2].0 != now[1].0);
}

#[test]
fn an_address_that_flaps_out_and_back_keeps_its_breaker_and_estimate() {
    let e = Endpoints::new(&upstream(2, Balance::RoundRobin, Some(breaker(4, 0.5))));
    let t0 = Instant::now();
    let a: SocketAddr = "10.1.0.1:80".parse().expect("addr");
    let b: SocketAddr = "10.1.0.2:80".parse().expect("addr");
    e.shared.replace(&[(1, vec![a, b])]);
    let a_id = e.current()[1].0;
    // `a` fails every attempt until its breaker opens.
    for _ in 0..12 {
        let mut l = e.shared.pick(t0, None).expect("a pick");
        if l.id() == a_id {
            l.settle(t0, Outcome::Failed(&CallErrorKind::Timeout));
        } else {
            l.settle(t0, Outcome::Answered(StatusCode::OK));
        }
    }
    assert_eq!(e.ejected(), 1);
    // The name's answer flaps: without `a`, then with it again.
    e.shared.replace(&[(1, vec![b])]);
    assert_eq!(e.ejected(), 0);
    e.shared.replace(&[(1, vec![a, b])]);
    let now = e.current();
    assert_eq!(now[1].0, a_id, "a came back as itself");
    assert_eq!(
        e.ejected(),
        1,
        "still ejected: the flap did not close its breaker"
    );
    assert!((0..20).all(|_| attempt(&e, t0, ms(1), Outcome::Answered(StatusCode::OK)) != 1));
    // Long gone, an address comes back new.
    e.shared.replace(&[(1, vec![b])]);
    e.shared
        .retired
        .lock()
        .expect("lock")
        .iter_mut()
        .for_each(|(at, _)| {
            *at = Instant::now()
                .checked_sub(RETIRED_FOR + ms(1))
                .expect("a clock older than that");
        });
    e.shared.replace(&[(1, vec![a, b])]);
    assert_ne!(e.current()[1].0, a_id);
    assert_eq!(e.ejected(), 0);
}

#[test]
fn a_returning_ejected_address_never_passes_the_ejection_cap() {
    // One configured address and a name: the cap (0.5 of 2) allows one out.
    let e = Endpoints::new(&upstream(2, Balance::RoundRobin, Some(breaker(4, 0.5))));
    let t0 = Instant::now();
    let a: SocketAddr = "10.1.0.1:80".parse().expect("addr");
    let c: SocketAddr = "10.1.0.3:80".parse().expect("addr");
    e.shared.replace(&[(1, vec![a])]);
    let ids: Vec<EndpointId> = e.current().iter().map(|(id, _)| *id).collect();
    for _ in 0..8 {
        let mut l = e.shared.pick(t0, None).expect("a pick");
        if l.id() == ids[1] {
            l.settle(t0, Outcome::Failed(&CallErrorKind::Timeout));
        } else {
            l.settle(t0, Outcome::Answered(StatusCode::OK));
        }
    }
    assert_eq!(e.ejected(), 1);
    // `a` leaves; `c` takes its place and is ejected in turn (the cap allows it now).
    e.shared.replace(&[(1, vec![c])]);
    let c_id = e.current()[1].0;
    for _ in 0..8 {
        let mut l = e.shared.pick(t0, None).expect("a pick");
        if l.id() == c_id {
            l.settle(t0, Outcome::Failed(&CallErrorKind::Timeout));
        } else {
            l.settle(t0, Outcome::Answered(StatusCode::OK));
        }
    }
    assert_eq!(e.ejected(), 1);
    // `a` returns beside `c`: two of three ejected would pass the cap of one; it comes back new.
    e.shared.replace(&[(1, vec![a, c])]);
    assert_eq!(e.ejected(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the outcomes, no more endpoints are ejected than the cap allows.
    #[test]
    fn ejections_never_exceed_the_cap(
        n in 1usize..7,
        fraction in prop_oneof![Just(0.0), Just(0.1), Just(0.34), Just(0.5), Just(0.75), Just(1.0)],
        steps in prop::collection::vec((0u8..6, 0u64..3000), 1..300),
    ) {
        let e = Endpoints::new(&upstream(n, Balance::P2c, Some(breaker(3, fraction))));
        let cap = breaker::max_ejected(fraction, n);
        let mut now = Instant::now();
        let mut held: Vec<Lease> = Vec::new();
        for (what, advance) in steps {
            now += ms(advance);
            match e.shared.pick(now, None) {
                Ok(mut lease) => match what {
                    0 => lease.settle(now, Outcome::Answered(StatusCode::OK)),
                    1 => lease.settle(now, Outcome::Answered(StatusCode::BAD_GATEWAY)),
                    2 => lease.settle(now, Outcome::Failed(&CallErrorKind::Connect)),
                    3 => lease.settle(now, Outcome::Failed(&CallErrorKind::Timeout)),
                    4 => held.push(lease),
                    _ => drop(lease),
                },
                Err(err) => prop_assert_eq!(err.kind, CallErrorKind::BreakerOpen),
            }
            if held.len() > 3 {
                let mut l = held.remove(0);
                l.settle(now, Outcome::Failed(&CallErrorKind::Io));
            }
            prop_assert!(e.ejected() <= cap, "{} ejected, cap {}", e.ejected(), cap);
        }
    }
}
