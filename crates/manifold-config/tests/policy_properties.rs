//! Properties of the policy tables over arbitrary values (in range, at the edges, far out, NaN,
//! infinities): a table is accepted exactly when every value it gives is in its documented
//! range, and an accepted table lands in the model value for value, with the model's defaults
//! for every key it leaves out. So no value the runtime cannot handle gets through, and no
//! valid one is silently changed.

use manifold_config::policy::{BreakerPolicy, HedgeAfter, RetryOn, RetryPolicy};
use proptest::prelude::*;
use std::time::Duration;

const HOUR_MS: u64 = 60 * 60 * 1000;

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..=1.0f64,
        2 => -1.5..2.5f64,
        1 => Just(0.0),
        1 => Just(1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => any::<f64>(),
    ]
}

fn int(typical: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = i64> {
    prop_oneof![4 => typical, 1 => any::<i64>()]
}

fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![0..=20_000u64, 0..=2 * HOUR_MS, Just(0), Just(HOUR_MS)]
}

/// TOML for a float, NaN and the infinities included.
fn toml_f64(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{f:?}")
    }
}

fn in_unit(f: f64, zero_ok: bool) -> bool {
    f.is_finite() && f <= 1.0 && if zero_ok { f >= 0.0 } else { f > 0.0 }
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn compile_with(keys: &str) -> Result<manifold_config::policy::UpstreamPolicies, String> {
    let src = format!(
        "[upstreams.u]\nendpoints = [\"http://127.0.0.1:7001\"]\ntimeout = \"2h\"\n{keys}\n"
    );
    manifold_config::compile("p.toml".as_ref(), &src)
        .map(|c| c.upstreams[0].policies.clone())
        .map_err(|e| e.to_string())
}

fn retry_on(s: &str) -> Option<RetryOn> {
    match s {
        "connect" => Some(RetryOn::Connect),
        "reset" => Some(RetryOn::Reset),
        "timeout" => Some(RetryOn::Timeout),
        _ => s
            .parse::<u16>()
            .ok()
            .filter(|c| s.len() == 3 && (500..=599).contains(c))
            .map(RetryOn::Status),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_retry_table_is_accepted_iff_in_range_and_lands_whole(
        attempts in proptest::option::of(int(-1..=12)),
        budget in proptest::option::of(float()),
        min_per_second in proptest::option::of(int(-2..=10_002)),
        backoff in proptest::option::of(0..=12_000u64),
        on in proptest::option::of(proptest::collection::vec(
            prop::sample::select(vec!["connect", "reset", "timeout", "500", "503", "599", "404", "600", "050", "x"]),
            0..5,
        )),
    ) {
        let mut kv = Vec::new();
        let mut valid = true;
        let mut want = RetryPolicy::default();
        if let Some(a) = attempts {
            kv.push(format!("attempts = {a}"));
            valid &= (1..=10).contains(&a);
            want.attempts = a.clamp(0, 10) as u32;
        }
        if let Some(b) = budget {
            kv.push(format!("budget = {}", toml_f64(b)));
            valid &= in_unit(b, true);
            want.budget = b;
        }
        if let Some(m) = min_per_second {
            kv.push(format!("min_per_second = {m}"));
            valid &= (0..=10_000).contains(&m);
            want.min_per_second = m.clamp(0, 10_000) as u32;
        }
        if let Some(b) = backoff {
            kv.push(format!("backoff = \"{b}ms\""));
            valid &= b <= 10_000;
            want.backoff = ms(b);
        }
        if let Some(on) = &on {
            let quoted: Vec<String> = on.iter().map(|o| format!("{o:?}")).collect();
            kv.push(format!("on = [{}]", quoted.join(", ")));
            want.on.clear();
            for o in on {
                match retry_on(o) {
                    Some(r) if !want.on.contains(&r) => want.on.push(r),
                    Some(_) => {}
                    None => valid = false,
                }
            }
        }
        let got = compile_with(&format!("retry = {{ {} }}", kv.join(", ")));
        match (valid, got) {
            (true, Ok(p)) => prop_assert_eq!(p.retry, want),
            (false, Err(_)) => {}
            (valid, got) => prop_assert!(false, "valid = {valid} but got {got:?} for {kv:?}"),
        }
    }

    #[test]
    fn a_hedge_table_is_accepted_iff_in_range_and_lands_whole(
        after in proptest::option::of(prop_oneof![
            (40.0..=100.0f64).prop_map(|q| format!("p{q:.1}")),
            millis().prop_map(|m| format!("{m}ms")),
        ]),
        max in proptest::option::of(int(-1..=5)),
        budget in proptest::option::of(float()),
    ) {
        let mut kv = Vec::new();
        let mut valid = true;
        let (mut want_after, mut want_max, mut want_budget) = (HedgeAfter::Percentile(95.0), 1, 0.05);
        if let Some(a) = &after {
            kv.push(format!("after = {a:?}"));
            if let Some(q) = a.strip_prefix('p') {
                let q: f64 = q.parse().expect("formatted above");
                valid &= (50.0..=99.9).contains(&q);
                want_after = HedgeAfter::Percentile(q);
            } else {
                let m: u64 = a.trim_end_matches("ms").parse().expect("formatted above");
                valid &= (1..=HOUR_MS).contains(&m);
                want_after = HedgeAfter::Fixed(ms(m));
            }
        }
        if let Some(m) = max {
            kv.push(format!("max = {m}"));
            valid &= (1..=3).contains(&m);
            want_max = m.clamp(0, 3) as u32;
        }
        if let Some(b) = budget {
            kv.push(format!("budget = {}", toml_f64(b)));
            valid &= in_unit(b, false);
            want_budget = b;
        }
        let got = compile_with(&format!("hedge = {{ {} }}", kv.join(", ")));
        match (valid, got) {
            (true, Ok(p)) => {
                let h = p.hedge.expect("a hedge table configures hedging");
                prop_assert_eq!(h.after, want_after);
                prop_assert_eq!(h.max, want_max);
                prop_assert_eq!(h.budget, want_budget);
            }
            (false, Err(_)) => {}
            (valid, got) => prop_assert!(false, "valid = {valid} but got {got:?} for {kv:?}"),
        }
    }

    #[test]
    fn a_breaker_table_is_accepted_iff_in_range_and_lands_whole(
        failure_rate in proptest::option::of(float()),
        min_requests in proptest::option::of(int(-1..=1_000_001)),
        window in proptest::option::of(millis()),
        open_for in proptest::option::of(millis()),
        max_open_for in proptest::option::of(millis()),
        max_ejected in proptest::option::of(float()),
    ) {
        let mut kv = Vec::new();
        let mut valid = true;
        let mut want = BreakerPolicy::default();
        if let Some(f) = failure_rate {
            kv.push(format!("failure_rate = {}", toml_f64(f)));
            valid &= in_unit(f, false);
            want.failure_rate = f;
        }
        if let Some(m) = min_requests {
            kv.push(format!("min_requests = {m}"));
            valid &= (1..=1_000_000).contains(&m);
            want.min_requests = m.clamp(0, 1_000_000) as u32;
        }
        if let Some(w) = window {
            kv.push(format!("window = \"{w}ms\""));
            valid &= (100..=HOUR_MS).contains(&w);
            want.window = ms(w);
        }
        if let Some(o) = open_for {
            kv.push(format!("open_for = \"{o}ms\""));
            valid &= (1..=HOUR_MS).contains(&o);
            want.open_for = ms(o);
            want.max_open_for = want.max_open_for.max(ms(o));
        }
        if let Some(m) = max_open_for {
            kv.push(format!("max_open_for = \"{m}ms\""));
            valid &= (1..=HOUR_MS).contains(&m) && ms(m) >= want.open_for;
            want.max_open_for = ms(m);
        }
        if let Some(e) = max_ejected {
            kv.push(format!("max_ejected = {}", toml_f64(e)));
            valid &= in_unit(e, true);
            want.max_ejected = e;
        }
        let got = compile_with(&format!("circuit_breaker = {{ {} }}", kv.join(", ")));
        match (valid, got) {
            (true, Ok(p)) => {
                let b = p.circuit_breaker.expect("a breaker table configures breaking");
                prop_assert!(b.max_open_for >= b.open_for);
                prop_assert_eq!(b, want);
            }
            (false, Err(_)) => {}
            (valid, got) => prop_assert!(false, "valid = {valid} but got {got:?} for {kv:?}"),
        }
    }
}
