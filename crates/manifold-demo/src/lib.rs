//! `manifold demo`: proof, on one machine with nothing to set up, that Manifold's latency levers
//! work.
//!
//! The seed documents make a claim with figures: the shop's checkout costs 750 ms when its calls
//! run one after another and 450 ms when they run as their dependency graph allows; the profile
//! page 300 ms against 200 ms. This crate measures that claim instead of quoting it. In one
//! process it starts the simulated shop ([`manifold_sim::SimConfig::shop`]) on ephemeral loopback
//! ports, one real gateway per [`Strategy`] (each strategy is a config file from `examples/`, run
//! as written, with only its upstream addresses pointed at the sim), and sends every
//! [`Scenario`] through every strategy with the same open-loop load ([`manifold_load`]: latency
//! from each request's scheduled send time). The result is a table (p50, p99, the plan's ideal,
//! the gain over the baseline), a JSON document, and a self-contained HTML report with a latency
//! chart per scenario and a waterfall of one request per strategy, drawn from the sim's own call
//! records.
//!
//! Strategies and scenarios are lists: a capability (caching, offloading) adds a [`Strategy`]
//! with its config file, and each scenario whose route that file declares gains a row. A
//! strategy's file holds only the routes the capability changes (`shop-cached.toml` the profile
//! page, `shop-offloaded.toml` the checkout), so every row is a file a reader can run. Rows that
//! prove more than latency say so from the sim's own counts: the share of cached calls the cache
//! answered, and that every offloaded call was still delivered after the answer.
//!
//! Hedging and balancing only matter when replicas differ, so they are [`Contrast`]s: one
//! scenario on a shop of its own where one service has misbehaving replicas (a straggling orders
//! replica, a payment replica turning slow mid-run), measured without and with the policy. Their
//! gain is read on p99, and the sim counts what the policy cost that service in extra requests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), manifold_demo::DemoError> {
//! let report = manifold_demo::run(&manifold_demo::DemoSpec::quick(), |step| eprintln!("{step}")).await?;
//! print!("{}", report.table());
//! println!("{}", report.to_json());
//! # Ok(()) }
//! ```

mod follow;
mod html;
mod measure;
mod report;

use std::time::Duration;

pub use manifold_load::KeyDist;
pub use measure::run;
pub use report::{
    CdfPoint, DemoReport, Gain, OffloadResult, ScenarioResult, StrategyResult, UpstreamCalls,
    Waterfall, WaterfallCall,
};

/// A way of composing the shop's calls: one config file, run as written by its own gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strategy {
    /// Short name shown in the table and the JSON (`sequential`, `concurrent`, …).
    pub name: &'static str,
    /// One line saying what the strategy does.
    pub summary: &'static str,
    /// Where the config lives in the repository, for the reader (`examples/shop.toml`).
    pub file: &'static str,
    /// The config's TOML, compiled into the binary so the demo runs from any directory.
    pub source: &'static str,
}

/// Calls one after another: the seed documents' baseline (`examples/shop-sequential.toml`).
pub const SEQUENTIAL: Strategy = Strategy {
    name: "sequential",
    summary: "each call waits for the previous one",
    file: "examples/shop-sequential.toml",
    source: include_str!("../../../examples/shop-sequential.toml"),
};

/// The dependency graph: every call starts when its inputs are ready (`examples/shop.toml`).
pub const CONCURRENT: Strategy = Strategy {
    name: "concurrent",
    summary: "every call starts when its inputs are ready (the dependency graph)",
    file: "examples/shop.toml",
    source: include_str!("../../../examples/shop.toml"),
};

/// The dependency graph with the profile page's calls cached (`examples/shop-cached.toml`).
pub const CACHED: Strategy = Strategy {
    name: "cached",
    summary: "the profile's calls answered from memory when the user was seen recently",
    file: "examples/shop-cached.toml",
    source: include_str!("../../../examples/shop-cached.toml"),
};

/// The dependency graph with the shipping label queued durably and delivered after the answer
/// (`examples/shop-offloaded.toml`).
pub const OFFLOADED: Strategy = Strategy {
    name: "offloaded",
    summary: "the shipping label queued durably and created after the answer",
    file: "examples/shop-offloaded.toml",
    source: include_str!("../../../examples/shop-offloaded.toml"),
};

/// Every strategy the demo knows, the baseline first (gains are measured against it). A
/// strategy runs the scenarios whose route its config declares.
pub const STRATEGIES: &[Strategy] = &[SEQUENTIAL, CONCURRENT, CACHED, OFFLOADED];

/// The profile page with its orders call hedged after the upstream's live p95
/// (`examples/shop-hedged.toml`).
pub const HEDGED: Strategy = Strategy {
    name: "hedged",
    summary: "a second orders request to another replica when the first is slower than p95",
    file: "examples/shop-hedged.toml",
    source: include_str!("../../../examples/shop-hedged.toml"),
};

/// The checkout with its payment replicas taken in turn (`examples/shop-round-robin.toml`).
pub const ROUND_ROBIN: Strategy = Strategy {
    name: "round_robin",
    summary: "payment replicas in turn",
    file: "examples/shop-round-robin.toml",
    source: include_str!("../../../examples/shop-round-robin.toml"),
};

/// The checkout with its payment replica chosen by power of two choices over peak-EWMA cost
/// (`examples/shop-p2c.toml`).
pub const P2C: Strategy = Strategy {
    name: "p2c",
    summary: "the cheaper of two payment replicas by peak-EWMA cost",
    file: "examples/shop-p2c.toml",
    source: include_str!("../../../examples/shop-p2c.toml"),
};

/// One scenario on a shop with one service changed (replicas that straggle or turn slow),
/// measured without and then with a policy: the levers that matter only when replicas differ.
/// The contrast runs on a shop of its own, so the other rows keep the seed documents' shop.
#[derive(Debug, Clone, Copy)]
pub struct Contrast {
    /// The rows' name in the table (`hedged`, `balanced`).
    pub name: &'static str,
    /// What is changed and what is compared, in one line.
    pub summary: &'static str,
    /// The scenario measured (its route must be in both files).
    pub scenario: Scenario,
    /// The shop's service that gets replicas.
    pub service: &'static str,
    /// That service's replicas, for measurements of the given length (a replica turning slow
    /// does so a fraction of the way in).
    pub replicas: fn(std::time::Duration) -> Vec<manifold_sim::ReplicaConfig>,
    /// The baseline.
    pub without: Strategy,
    /// The policy.
    pub with: Strategy,
}

/// The profile page with one of two orders replicas straggling: one call in ten takes 4× its
/// 200 ms. Without the hedge (`examples/shop.toml`) against with it.
pub const HEDGED_ROWS: Contrast = Contrast {
    name: "hedged",
    summary: "profile; orders has 2 replicas, one taking 4× its 200 ms on 10% of its calls",
    scenario: PROFILE,
    service: "orders",
    replicas: straggling_orders,
    without: CONCURRENT,
    with: HEDGED,
};

fn straggling_orders(_: std::time::Duration) -> Vec<manifold_sim::ReplicaConfig> {
    vec![
        manifold_sim::ReplicaConfig::default(),
        manifold_sim::ReplicaConfig {
            straggler_rate: 0.1,
            straggler_scale: 4.0,
            ..Default::default()
        },
    ]
}

/// The checkout with one of three payment replicas turning 5× slower a third of the way into
/// each measurement. Round robin against p2c.
pub const BALANCED_ROWS: Contrast = Contrast {
    name: "balanced",
    summary: "checkout; payment has 3 replicas, one turning 5× slower a third of the way in",
    scenario: CHECKOUT,
    service: "payment",
    replicas: slowing_payment,
    without: ROUND_ROBIN,
    with: P2C,
};

fn slowing_payment(measurement: std::time::Duration) -> Vec<manifold_sim::ReplicaConfig> {
    vec![
        manifold_sim::ReplicaConfig::default(),
        manifold_sim::ReplicaConfig::default(),
        manifold_sim::ReplicaConfig {
            slow_after: Some(measurement / 3),
            slow_scale: 5.0,
            ..Default::default()
        },
    ]
}

/// Every contrast the demo runs, after the strategies.
pub const CONTRASTS: &[Contrast] = &[HEDGED_ROWS, BALANCED_ROWS];

/// One user-facing request of the shop, sent to every strategy's gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Short name (`checkout`, `profile`); also the route's name in every strategy's config.
    pub name: &'static str,
    /// One line saying what the request does.
    pub summary: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Path sent to the gateway; `{seq}` becomes the request's number.
    pub path: &'static str,
    /// JSON request body, if any.
    pub body: Option<&'static str>,
    /// How `{key}` in the path is drawn, if it has one.
    pub keys: Option<KeyDist>,
}

/// The checkout: order → payment ∥ inventory ∥ shipping → confirm.
pub const CHECKOUT: Scenario = Scenario {
    name: "checkout",
    summary: "order → payment, inventory, shipping → confirm",
    method: "POST",
    path: "/checkout",
    body: Some(r#"{"total": 42.5, "items": [{"sku": "a-1", "qty": 2}], "address": "1 Main St"}"#),
    keys: None,
};

/// The profile page: the user and their orders. User ids are drawn Zipf(0.99) over 100 users,
/// like the pages a shop's active users open again and again (a few very often, most rarely):
/// what decides how often a cache can answer.
pub const PROFILE: Scenario = Scenario {
    name: "profile",
    summary: "user + orders",
    method: "GET",
    path: "/user-profile/{key}",
    body: None,
    keys: Some(KeyDist::Zipf { n: 100, s: 0.99 }),
};

/// Every scenario the demo runs.
pub const SCENARIOS: &[Scenario] = &[CHECKOUT, PROFILE];

/// What to run and how hard.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    /// The strategies, the baseline first.
    pub strategies: Vec<Strategy>,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
    /// The contrasts, each on its own shop, after the scenarios.
    pub contrasts: Vec<Contrast>,
    /// Scheduled requests per second, the same for every measurement.
    pub rate: f64,
    /// Length of each measurement (one per scenario and strategy).
    pub duration: Duration,
    /// Requests sent to each target before it is measured (connections, first-use costs).
    pub warmup_requests: u64,
    /// Give up on a request this long after its scheduled time.
    pub timeout: Duration,
    /// Also record one request alone per scenario and strategy, for the waterfall.
    pub waterfall: bool,
    /// How the simulated shop waits out its service times and the load generator its send
    /// times. The library default is tokio's timer (it follows paused time in tests); `manifold
    /// demo` uses [`Timer::precise`](manifold_timer::Timer::precise), since tokio's rounds each
    /// wait up to its next millisecond tick and would be counted as the gateway's time.
    pub timer: manifold_timer::Timer,
}

impl DemoSpec {
    /// The full demo: 20 requests per second for 10 s per measurement (about two and a half
    /// minutes for the ten measurements).
    pub fn full() -> Self {
        DemoSpec {
            strategies: STRATEGIES.to_vec(),
            scenarios: SCENARIOS.to_vec(),
            contrasts: CONTRASTS.to_vec(),
            rate: 20.0,
            duration: Duration::from_secs(10),
            warmup_requests: 5,
            timeout: Duration::from_secs(5),
            waterfall: true,
            timer: manifold_timer::Timer::Tokio,
        }
    }

    /// The same load for 3 s per measurement: about 45 s in all.
    pub fn quick() -> Self {
        DemoSpec {
            duration: Duration::from_secs(3),
            ..Self::full()
        }
    }
}

/// Why the demo could not run. (Failed requests are not errors of the run: they are counted in
/// each [`StrategyResult`].)
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A strategy's config does not compile, declares none of the scenarios' routes, or names an
    /// upstream the sim does not simulate.
    #[error("config error: {0}")]
    Config(String),
    /// The simulated shop could not start.
    #[error("sim error: {0}")]
    Sim(#[from] manifold_sim::SimError),
    /// A gateway could not start.
    #[error("gateway error: {0}")]
    Gateway(#[from] manifold_gateway::GatewayError),
    /// The load generator refused a measurement (bad rate or bounds).
    #[error("load error: {0}")]
    Load(#[from] manifold_load::LoadError),
    /// The spec is unusable (no strategies, no scenarios).
    #[error("input error: {0}")]
    Input(String),
}
